package adcp

import (
	"context"
	"encoding/json"

	"github.com/jackc/pgx/v5"

	"github.com/adcp-go/idempotency/idem"
)

// Mutating returns the runner of a mutating task whose work runs through g
// at most once per (principal, account, idempotency_key):
//
//   - the version pin, then idempotency_key, are read from the arguments
//     and validated before anything else (missing or malformed key:
//     INVALID_REQUEST, recovery correctable, field idempotency_key), and
//     so is the principal;
//   - requests are compared by idem.CanonicalJSONSHA256 of the arguments
//     and by tool name;
//   - a success puts h's value at the root of the answer, with replayed
//     false on a fresh run and true on a replay, and the current request's
//     context echoed (the stored body never holds context);
//   - an error is {adcp_error, context}; IDEMPOTENCY_CONFLICT carries code,
//     message and (from AdCP 3.1) recovery only.
//
// h's value must encode as a JSON object. If it cannot be encoded after h
// succeeded, the work is done: the key is kept and every retry gets
// CONFIGURATION_ERROR (idem.ErrUnencodable), never a second run.
func Mutating[Out any](g *idem.Guard, opts *Options, h Handler[Out]) Runner {
	return keyed(opts, true, func(ctx context.Context, r idem.Request, c *Call) (idem.Result[json.RawMessage], error) {
		return idem.Do(ctx, g, r, func(ctx context.Context) (json.RawMessage, error) {
			v, err := h(ctx, c)
			if err != nil {
				return nil, err
			}
			return EncodeBody(v) // its failures match idem.ErrUnencodable
		})
	}, nil)
}

// MutatingTx is [Mutating] for the Postgres store: h runs inside the
// transaction of idem.RunInTx on db, so its writes and the stored answer
// commit together. A value that cannot be encoded rolls everything back.
func MutatingTx[Out any](s *idem.Store, db idem.DB, opts *Options, h TxHandler[Out]) Runner {
	return keyed(opts, true, func(ctx context.Context, r idem.Request, c *Call) (idem.Result[json.RawMessage], error) {
		return idem.RunInTx(ctx, s, db, r, func(ctx context.Context, tx pgx.Tx) (json.RawMessage, error) {
			v, err := h(ctx, tx, c)
			if err != nil {
				return nil, err
			}
			return EncodeBody(v)
		})
	}, nil)
}

// Read returns the runner of a read task (get_*, list_*): when the caller
// supplies an idempotency_key, the answer is replayed under the same rules
// as a mutating task's (replayed true on a replay; the same key on another
// task is IDEMPOTENCY_CONFLICT; a new key counts against the read budget of
// the rate limiter); without a key the read just runs. AdCP 3.2 asks this
// of every pure read, capability discovery included.
func Read[Out any](g *idem.Guard, opts *Options, h Handler[Out]) Runner {
	run := func(ctx context.Context, c *Call) (json.RawMessage, error) {
		v, err := h(ctx, c)
		if err != nil {
			return nil, err
		}
		return EncodeBody(v)
	}
	return keyed(opts, false, func(ctx context.Context, r idem.Request, c *Call) (idem.Result[json.RawMessage], error) {
		r.Read = true
		return idem.Do(ctx, g, r, func(ctx context.Context) (json.RawMessage, error) { return run(ctx, c) })
	}, run)
}

// ReadOnly returns the runner of a task outside the replay contract (a test
// controller, say): no idempotency key, but the same answer shapes (the
// body at the root, context echoed, errors as adcp_error).
func ReadOnly[Out any](opts *Options, h Handler[Out]) Runner {
	return func(ctx context.Context, t Task) Answer {
		args, v, failed := start(opts, t)
		if failed != nil {
			return *failed
		}
		out, err := h(ctx, &Call{Tool: t.Tool, Principal: t.Principal, Version: v, Arguments: args.Raw, Context: args.Context})
		var body json.RawMessage
		if err == nil {
			body, err = EncodeBody(out)
		}
		if err != nil {
			return ErrorAnswer(opts, v, args.Context, err)
		}
		return SuccessAnswer(v, body, nil, args.Context)
	}
}

// start reads a task's arguments and negotiates the version to serve; it
// returns the error answer when either fails.
func start(opts *Options, t Task) (Arguments, Version, *Answer) {
	args, err := ParseArguments(t.Arguments)
	if err != nil {
		a := ErrorAnswer(opts, Latest, nil, err)
		return args, Latest, &a
	}
	v, err := args.Version()
	if err != nil {
		a := ErrorAnswer(opts, Latest, args.Context, err)
		return args, Latest, &a
	}
	return args, v, nil
}

type runFunc func(ctx context.Context, r idem.Request, c *Call) (idem.Result[json.RawMessage], error)

// keyed is the runner of a task under the replay contract: run with a key
// (required when requireKey), or unkeyed without one (reads).
func keyed(opts *Options, requireKey bool, run runFunc, unkeyed func(context.Context, *Call) (json.RawMessage, error)) Runner {
	return func(ctx context.Context, t Task) Answer {
		args, v, failed := start(opts, t)
		if failed != nil {
			return *failed
		}
		c := &Call{Tool: t.Tool, Principal: t.Principal, Version: v, Arguments: args.Raw, Context: args.Context}
		var err error
		if !requireKey && !args.HasKey() {
			body, err := unkeyed(ctx, c)
			if err != nil {
				return ErrorAnswer(opts, v, args.Context, err)
			}
			return SuccessAnswer(v, body, nil, args.Context)
		}
		if c.Key, err = args.IdempotencyKey(); err != nil {
			return ErrorAnswer(opts, v, args.Context, err)
		}
		var salt []byte
		if opts != nil {
			salt = opts.AccountSalt
		}
		if c.Account, err = args.ScopeAccount(salt, v); err != nil {
			return ErrorAnswer(opts, v, args.Context, err)
		}
		res, err := run(ctx, idem.Request{Principal: c.Principal, Account: c.Account, Key: c.Key, Operation: c.Tool, Payload: args.Raw}, c)
		if err != nil {
			return ErrorAnswer(opts, v, args.Context, err)
		}
		return SuccessAnswer(v, res.Response, &res.Replayed, args.Context)
	}
}
