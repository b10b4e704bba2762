//go:build race

package adcp

// raceEnabled: the race detector's instrumentation allocates, so
// allocation counts are not measured under it.
const raceEnabled = true
