//go:build !chaos

package integration

// reliabilityFull is false in ordinary builds: `make test` (and CI) run the
// bounded size of the reliability suite. See knob in reliability_test.go.
const reliabilityFull = false
