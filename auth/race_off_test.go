//go:build !race

package auth

// raceMemFactor scales memory bounds under the race detector (1 without it).
const raceMemFactor = 1
