//go:build !race

package integration

// raceEnabled reports a -race build, for the soak's figures.
const raceEnabled = false
