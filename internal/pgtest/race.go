package pgtest

import "sync"

// Race runs trials rounds of a race: in each, after setup (when not nil),
// racers goroutines call try(trial, racer) at the same moment (released
// together from a closed channel). It returns, per round, how many returned
// true — for single-use checks, exactly one must.
func Race(racers, trials int, setup func(trial int), try func(trial, racer int) bool) []int {
	wins := make([]int, trials)
	for trial := range trials {
		if setup != nil {
			setup(trial)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		start := make(chan struct{})
		for r := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if try(trial, r) {
					mu.Lock()
					wins[trial]++
					mu.Unlock()
				}
			}()
		}
		close(start)
		wg.Wait()
	}
	return wins
}
