//go:build !race

package adcp

const raceEnabled = false
