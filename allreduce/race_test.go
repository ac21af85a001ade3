//go:build race

package allreduce

// raceEnabled shrinks the heaviest test cases under the race detector, which
// slows the arithmetic tenfold without adding interleavings worth checking.
const raceEnabled = true
