//go:build race

package auth

// raceMemFactor scales memory bounds under the race detector, whose shadow
// memory costs several times the program's own (Go's race detector docs:
// "memory usage may increase by 5-10x").
const raceMemFactor = 8
