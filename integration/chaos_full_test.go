//go:build chaos

package integration

// reliabilityFull selects the full sizes of the reliability suite (the
// issue's figures): `make reliability` builds with -tags chaos.
const reliabilityFull = true
