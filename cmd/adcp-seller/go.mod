module github.com/adcp-go/idempotency/cmd/adcp-seller

go 1.26.0

require (
	github.com/adcp-go/idempotency v0.0.0-00010101000000-000000000000
	github.com/adcp-go/idempotency/adcpmcp v0.0.0-00010101000000-000000000000
	github.com/adcp-go/idempotency/httpsig v0.0.0-00010101000000-000000000000
	github.com/adcp-go/idempotency/migrations v0.0.0-00010101000000-000000000000
	github.com/jackc/pgx/v5 v5.12.0
	github.com/modelcontextprotocol/go-sdk v1.8.0
	github.com/pressly/goose/v3 v3.30.1
)

require (
	github.com/dunglas/httpsfv v1.1.2 // indirect
	github.com/google/jsonschema-go v0.4.3 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/puddle/v2 v2.2.3 // indirect
	github.com/mfridman/interpolate v0.2.0 // indirect
	github.com/segmentio/asm v1.2.1 // indirect
	github.com/segmentio/encoding v0.5.4 // indirect
	github.com/sethvargo/go-retry v0.5.0 // indirect
	github.com/yosida95/uritemplate/v3 v3.0.2 // indirect
	go.uber.org/multierr v1.11.0 // indirect
	golang.org/x/oauth2 v0.35.0 // indirect
	golang.org/x/sync v0.25.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/text v0.44.0 // indirect
	golang.org/x/time v0.15.0 // indirect
)

replace (
	github.com/adcp-go/idempotency => ../../
	github.com/adcp-go/idempotency/adcpmcp => ../../adcpmcp
	github.com/adcp-go/idempotency/httpsig => ../../httpsig
	github.com/adcp-go/idempotency/migrations => ../../migrations
)
