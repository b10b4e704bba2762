// Package adcpa2a serves AdCP tasks over A2A 0.3 (JSON-RPC) with
// github.com/a2aproject/a2a-go: it is the A2A twin of package adcpmcp, and
// like it a thin layer over the transport-free runners of package adcp.
//
// Each [Skill] maps an AdCP task name to an adcp.Runner (adcp.Mutating,
// adcp.MutatingTx, adcp.ReadOnly, ...). The task name is the
// A2A skill id, the MCP tool name and the idempotency operation alike, and
// the task's arguments reach the runner byte for byte, so one idem.Guard
// (or Postgres store) behind an MCP tool and an A2A skill is one key space:
// a key first used over MCP replays over A2A and the other way round.
//
// # Invocation
//
// [NewHandler] serves message/send, tasks/get and tasks/cancel, and the
// agent card ([NewAgentCard]) at [AgentCardPath]. A message/send invokes a
// skill with exactly one DataPart whose data is {"skill": ..., "input":
// {...}} (the AdCP profile) or {"skill": ..., "parameters": {...}} (what
// the AdCP client SDKs send); TextParts may accompany it and are ignored.
// The handler checks this before anything runs, on the request's own bytes,
// and answers a malformed invocation (no DataPart, several, a file part, a
// missing or unknown skill, arguments that are not an object, both input
// and parameters, an unknown member) with a JSON-RPC error -32602 whose data
// holds {"error": message, "adcp_error": {code INVALID_REQUEST, ...}}:
// the profile's "native A2A error handling" for invocations that never
// reach a handler. Nothing runs and nothing is stored for them.
//
// A request that activates the profile ([ExtensionURI] in the
// A2A-Extensions or X-A2A-Extensions header) gets the header echoed, and
// is held to the profile strictly: parameters is then refused, as the
// profile says it is not an alias. Activation is not required (the card
// declares the extension with required false), because the AdCP clients
// of this generation do not send the header.
//
// # Answers
//
// Every task a skill answers is an A2A Task in state completed, with one
// artifact holding one DataPart: the runner's answer (adcp.Answer.Body) as
// it is, the same object an MCP client gets as structuredContent, with
// replayed, the request's context and whatever else package adcp puts at
// its root. The artifact is named "result", "submitted" or "error" and
// lists [ExtensionURI].
//
//   - Errors: an AdCP error answer ({adcp_error, context}: a missing key,
//     IDEMPOTENCY_CONFLICT, a handler's own error) is also a completed task,
//     with the artifact named "error". The task ran and produced AdCP's
//     defined response; the profile keeps A2A failed tasks for fatal
//     failures, and a failed task loses adcp_error and context for the AdCP
//     clients of this generation (they read only "Task failed").
//   - Submitted work: an answer with status "submitted" and a task_id is
//     a completed A2A task (the invocation is done; the AdCP operation goes
//     on), and the artifact's metadata repeats the AdCP handle as
//     adcp_task_id, where the A2A 0.3 AdCP clients and the official
//     runner read it. (The AdCP 3.2 profile, written for A2A 1.0, keeps the
//     handle in the DataPart only; the DataPart holds it here too.)
//
// # Principal
//
// Keys and tasks are scoped by the authenticated caller. [Options].Principal
// reads it from the request; by default it is the authenticated a2asrv.User
// of the request's a2asrv.CallContext, which authentication middleware in
// front of the handler sets:
//
//	ctx, call := a2asrv.WithCallContext(r.Context(), nil)
//	call.User = &a2asrv.AuthenticatedUser{UserName: principal}
//	next.ServeHTTP(w, r.WithContext(ctx))
//
// A request without a principal fails closed: HTTP 401 with a JSON-RPC
// error whose adcp_error is AUTH_REQUIRED. The agent card is public and
// needs no principal: mount it outside the authentication middleware.
//
// # Tasks
//
// tasks/get returns a task this handler answered, to the principal that
// sent it (anyone else gets "task not found"). Tasks are kept in memory,
// the most recent ones up to [Options].MaxTaskBytes, without their request
// message (which may carry credentials). Their answers are durable in the
// idempotency store, not here: a retry with the same key replays the
// answer on any replica. tasks/cancel answers "task cannot be canceled":
// an AdCP invocation is done when its task is returned. Streaming and A2A
// push notifications are not offered (the card says so); AdCP webhooks
// travel inside the task's arguments as usual.
package adcpa2a

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/a2aproject/a2a-go/a2a"
	"github.com/a2aproject/a2a-go/a2asrv"

	"github.com/adcp-go/idempotency/adcp"
)

// ExtensionURI identifies the AdCP A2A profile for AdCP 3.x.
const ExtensionURI = "https://adcontextprotocol.org/extensions/adcp/v3"

// AgentCardPath is where the handler serves the agent card, below the path
// it is mounted at (A2A 0.3's well-known path).
const AgentCardPath = "/.well-known/agent-card.json"

// ProtocolVersion is the A2A protocol version the handler speaks.
const ProtocolVersion = "0.3.0"

// ErrConfig is matched (errors.Is) by every error [NewHandler] returns for
// an unusable configuration.
var ErrConfig = errors.New("adcpa2a: invalid configuration")

// Skill is an AdCP task served as an A2A skill.
type Skill struct {
	// ID is the AdCP task name, such as "create_media_buy": the A2A skill
	// id that a message's DataPart names, and the idempotency operation.
	// Use the MCP tool's name for the same task, so that both transports
	// share keys. 1 to 255 characters, each a letter, digit, '_', '.',
	// ':', '-' or '/'.
	ID string
	// Name is a human-readable label. Defaults to ID.
	Name string
	// Description says what the task does. Defaults to a generic line
	// naming the task.
	Description string
	// Run answers the task. Required.
	Run adcp.Runner
}

// Agent describes the agent on its card.
type Agent struct {
	// Name is the agent's human-readable name. Required.
	Name string
	// Description says what the agent offers. Required.
	Description string
	// URL is the absolute http(s) URL of the JSON-RPC endpoint: where the
	// handler is mounted, as clients reach it. Required.
	URL string
	// Version is the agent's version. Defaults to "1.0.0".
	Version string
	// Provider is the organisation behind the agent, if given.
	Provider *a2a.AgentProvider
	// DocumentationURL points to the agent's documentation, if given.
	DocumentationURL string
}

// Options configures a [Handler]. A nil *Options means the defaults.
type Options struct {
	// Principal returns the authenticated caller of a request; keys and
	// tasks are scoped by it. Defaults to the name of the authenticated
	// a2asrv.User in the request context's a2asrv.CallContext. An empty
	// principal fails closed (HTTP 401, AUTH_REQUIRED); it is never a
	// shared namespace.
	Principal func(r *http.Request) string
	// Logger receives internal failures (never keys, tokens or payloads)
	// of this package and of a2asrv. Defaults to slog.Default().
	Logger *slog.Logger
	// MaxBodyBytes bounds a request body; a larger one is refused with
	// HTTP 413 before it is parsed. Defaults to 1 MiB + 64 KiB: the
	// idempotency store's default payload limit plus room for the
	// JSON-RPC envelope.
	MaxBodyBytes int64
	// MaxTaskBytes bounds the memory of the tasks kept for tasks/get (their
	// JSON size); the oldest go first. Defaults to 16 MiB.
	MaxTaskBytes int64
}

const (
	defaultMaxBody  = 1<<20 + 64<<10
	defaultMaxTasks = 16 << 20
)

func (o *Options) logger() *slog.Logger {
	if o != nil && o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// NewAgentCard returns the A2A agent card of agent serving skills: one
// card skill per AdCP skill (id = the task name), JSON in and out, the AdCP
// extension under capabilities (not required, see the package
// documentation), HTTP bearer authentication, JSON-RPC at agent.URL, no
// streaming and no push notifications.
func NewAgentCard(agent Agent, skills []Skill) *a2a.AgentCard {
	cardSkills := make([]a2a.AgentSkill, 0, len(skills))
	for _, s := range skills {
		name, desc := s.Name, s.Description
		if name == "" {
			name = s.ID
		}
		if desc == "" {
			desc = fmt.Sprintf("AdCP task %s. Send one DataPart {\"skill\": %q, \"input\": {...}}.", s.ID, s.ID)
		}
		cardSkills = append(cardSkills, a2a.AgentSkill{ID: s.ID, Name: name, Description: desc, Tags: []string{"adcp"}})
	}
	version := agent.Version
	if version == "" {
		version = "1.0.0"
	}
	json := []string{"application/json"}
	return &a2a.AgentCard{
		Name:               agent.Name,
		Description:        agent.Description,
		URL:                agent.URL,
		Version:            version,
		Provider:           agent.Provider,
		DocumentationURL:   agent.DocumentationURL,
		ProtocolVersion:    ProtocolVersion,
		PreferredTransport: a2a.TransportProtocolJSONRPC,
		DefaultInputModes:  json,
		DefaultOutputModes: json,
		Capabilities: a2a.AgentCapabilities{
			Extensions: []a2a.AgentExtension{{
				URI:         ExtensionURI,
				Description: "AdCP structured task invocation profile: one DataPart {skill, input}",
				Required:    false,
			}},
		},
		SecuritySchemes: a2a.NamedSecuritySchemes{
			"bearer": a2a.HTTPAuthSecurityScheme{Scheme: "bearer", Description: "The AdCP bearer token."},
		},
		Security: []a2a.SecurityRequirements{{"bearer": a2a.SecuritySchemeScopes{}}},
		Skills:   cardSkills,
	}
}

// Handler serves AdCP skills over A2A JSON-RPC, and their agent card. Build
// it with [NewHandler].
type Handler struct {
	skills    map[string]adcp.Runner
	principal func(r *http.Request) string
	maxBody   int64
	card      http.Handler // the agent card
	rpc       http.Handler // a2asrv's JSON-RPC handler
}

// NewHandler returns the handler of agent's skills. It answers
//
//   - GET (and OPTIONS) of any path ending in [AgentCardPath] with the
//     agent card (mount it there, and at the origin's root for clients that
//     look only there);
//   - POST of anything else as A2A JSON-RPC: message/send invokes a skill,
//     tasks/get and tasks/cancel address the tasks it answered.
//
// The card is public; JSON-RPC requests need a principal (see [Options]).
// The errors it returns match [ErrConfig]: a missing name, description or
// URL, a URL that is not absolute, a skill without ID or Run, an invalid or
// duplicate ID.
func NewHandler(agent Agent, skills []Skill, opts *Options) (*Handler, error) {
	if agent.Name == "" || agent.Description == "" {
		return nil, fmt.Errorf("%w: the agent needs a name and a description", ErrConfig)
	}
	if u, err := url.Parse(agent.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: the agent URL must be an absolute http(s) URL", ErrConfig)
	}
	h := &Handler{skills: make(map[string]adcp.Runner, len(skills)), principal: defaultPrincipal, maxBody: defaultMaxBody}
	for i, s := range skills {
		switch {
		case !validSkillID(s.ID):
			return nil, fmt.Errorf("%w: skill %d: the ID must be 1 to 255 characters from A-Z a-z 0-9 _ . : - /", ErrConfig, i)
		case s.Run == nil:
			return nil, fmt.Errorf("%w: skill %q has no Run", ErrConfig, s.ID)
		case h.skills[s.ID] != nil:
			return nil, fmt.Errorf("%w: skill %q is registered twice", ErrConfig, s.ID)
		}
		h.skills[s.ID] = s.Run
	}
	maxTasks := int64(defaultMaxTasks)
	if opts != nil {
		if opts.Principal != nil {
			h.principal = opts.Principal
		}
		if opts.MaxBodyBytes > 0 {
			h.maxBody = opts.MaxBodyBytes
		}
		if opts.MaxTaskBytes > 0 {
			maxTasks = opts.MaxTaskBytes
		}
	}
	h.card = a2asrv.NewStaticAgentCardHandler(NewAgentCard(agent, skills))
	h.rpc = a2asrv.NewJSONRPCHandler(a2asrv.NewHandler(executor{log: opts.logger()},
		a2asrv.WithTaskStore(newTaskStore(maxTasks)),
		a2asrv.WithLogger(opts.logger()),
	))
	return h, nil
}

func validSkillID(id string) bool {
	if id == "" || len(id) > 255 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-' || c == '/') {
			return false
		}
	}
	return true
}

// defaultPrincipal is the authenticated a2asrv.User's name.
func defaultPrincipal(r *http.Request) string {
	if call, ok := a2asrv.CallContextFrom(r.Context()); ok && call.User != nil && call.User.Authenticated() {
		return call.User.Name()
	}
	return ""
}

type ctxKey int

const (
	principalKey ctxKey = iota
	invocationKey
)

// principalFrom returns the principal ServeHTTP put into ctx.
func principalFrom(ctx context.Context) string {
	p, _ := ctx.Value(principalKey).(string)
	return p
}
