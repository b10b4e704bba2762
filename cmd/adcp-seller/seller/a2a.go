package seller

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/adcpa2a"
	"github.com/adcp-go/idempotency/httpsig"
)

// A2APath is where the seller serves A2A JSON-RPC. Its agent card is at
// A2APath + adcpa2a.AgentCardPath and, for clients that look only at the
// origin, at adcpa2a.AgentCardPath.
const A2APath = "/a2a"

// The agent card's name and description.
const (
	agentName        = "adcp-go reference seller"
	agentDescription = "A sandbox AdCP 3 media-buy seller (github.com/adcp-go/idempotency): every mutating task runs at most once per idempotency_key, over MCP and A2A alike."
)

// a2aEndpoint is the seller's A2A side: the JSON-RPC handler and the
// agent card, built from the same tool table as the MCP server (tools.go),
// so that the two transports offer the same tasks under the same names
// and share one key space.
type a2aEndpoint struct {
	rpc    http.Handler // signature check, then adcpa2a's handler
	card   http.Handler
	skills []adcpa2a.Skill
}

// newA2A builds the A2A endpoint of the seller's tools. The principal of a
// request is the signer of a verified RFC 9421 signature, or the owner of
// its bearer token (Authorization, or x-adcp-auth as AdCP clients send it):
// the same credentials, and the same principals, as /mcp.
func (s *Seller) newA2A(maxBody int64) (*a2aEndpoint, error) {
	e := &a2aEndpoint{skills: make([]adcpa2a.Skill, 0, len(s.tools))}
	for _, t := range s.tools {
		e.skills = append(e.skills, adcpa2a.Skill{ID: t.name, Description: t.description, Run: noteSkill(t.name, t.run)})
	}
	agent := adcpa2a.Agent{Name: agentName, Description: agentDescription, Version: "0.2.0"}
	if s.cfg.PublicURL != "" {
		agent.URL = s.cfg.PublicURL + A2APath
	} else {
		// A placeholder the handler requires; the card is then built per
		// request (cardFromHost), never from it.
		agent.URL = "http://localhost" + A2APath
	}
	h, err := adcpa2a.NewHandler(agent, e.skills, &adcpa2a.Options{
		Principal:    s.a2aPrincipal,
		Logger:       s.log,
		MaxBodyBytes: maxBody,
	})
	if err != nil {
		return nil, fmt.Errorf("seller: A2A: %w", err)
	}
	e.rpc = bearerChallenge(s.signing.verifyA2A(h))
	e.card = h
	if s.cfg.PublicURL == "" {
		e.card = cardFromHost(agent, e.skills)
	}
	return e, nil
}

// mount adds the A2A routes to mux.
func (e *a2aEndpoint) mount(mux *http.ServeMux) {
	mux.Handle(A2APath, e.rpc)
	mux.Handle("GET "+A2APath+adcpa2a.AgentCardPath, e.card)
	mux.Handle("GET "+adcpa2a.AgentCardPath, e.card)
}

// a2aPrincipal is the principal of an A2A request (adcpa2a.Options
// Principal): the verified signer verifyA2A put in the context, else the
// owner of the bearer token; "" (refused with 401) for anything else. It
// notes the principal for the access log.
func (s *Seller) a2aPrincipal(r *http.Request) string {
	p, signed := r.Context().Value(signerKey{}).(string)
	if !signed {
		p = s.cfg.Tokens[bearerToken(r)]
	}
	if info := requestInfoFrom(r.Context()); info != nil && p != "" {
		info.mu.Lock()
		info.principal = p
		info.mu.Unlock()
	}
	return p
}

// bearerToken is the token of "Authorization: Bearer <token>" or, without
// an Authorization header, of x-adcp-auth; "" if there is none.
func bearerToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(token) == "" {
			return ""
		}
		return strings.TrimSpace(token)
	}
	return strings.TrimSpace(r.Header.Get("X-Adcp-Auth"))
}

// verifyA2A wraps the A2A endpoint as verifyMCP wraps /mcp: signed
// requests are verified under the same policy, and a verified signature
// authenticates its signer (a2aPrincipal reads it from the context).
// The operation a policy's required_for names is the skill of a
// message/send, which only the A2A body says (a2aOperation).
func (g *signatures) verifyA2A(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			next.ServeHTTP(w, r) // adcpa2a answers 405
			return
		}
		r, principal, ok := g.check(w, r, g.mcp, a2aOperation)
		if !ok {
			return
		}
		if principal != "" {
			r = r.WithContext(context.WithValue(r.Context(), signerKey{}, principal))
		}
		next.ServeHTTP(w, r)
	})
}

// a2aOperation is what an A2A JSON-RPC request invokes: for a message/send
// naming a skill, that skill (the AdCP operation); for any other request
// its JSON-RPC method. adcpa2a.Invoked decodes the body as the handler
// behind does, so the skill a signing policy judges is the skill that
// runs. It notes the method for the access log.
func a2aOperation(r *http.Request, body []byte) httpsig.Operation {
	method, skill := adcpa2a.Invoked(body)
	if info := requestInfoFrom(r.Context()); info != nil {
		m := "(invalid)" // the caller chose it: logged only if it is a plain name
		if method != "" && len(method) <= maxToolNameLen && isName(method, "_-/") {
			m = method
		}
		info.mu.Lock()
		info.a2aMethod = m
		info.mu.Unlock()
	}
	switch {
	case skill != "":
		return httpsig.Operation{Name: skill}
	case method == "":
		return httpsig.Operation{Method: "(invalid)"}
	}
	return httpsig.Operation{Method: method}
}

// noteSkill wraps a tool's runner for A2A: it notes the tool and the AdCP
// error code of an error answer for the access log (MCP's are noted by
// noteMCP).
func noteSkill(name string, run adcp.Runner) adcp.Runner {
	return func(ctx context.Context, t adcp.Task) adcp.Answer {
		info := requestInfoFrom(ctx)
		if info != nil {
			info.mu.Lock()
			info.tool = name
			info.mu.Unlock()
		}
		ans := run(ctx, t)
		if info != nil && ans.IsError {
			if code := adcpErrorCode(ans.Body); code != "" {
				info.mu.Lock()
				info.adcpError = code
				info.mu.Unlock()
			}
		}
		return ans
	}
}

// cardFromHost serves the agent card with its URL made from the request's
// Host, for a Seller without Config.PublicURL (tests, development): the
// card must name an absolute URL, and the listener's is known only once
// it serves. The card is marked not cacheable, since another Host gets
// another URL; a Host that is not a plain host[:port] is refused.
func cardFromHost(agent adcpa2a.Agent, skills []adcpa2a.Skill) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		h, port, err := net.SplitHostPort(host)
		if err != nil {
			h, port = host, ""
		}
		if h == "" || !isName(strings.Trim(h, "[]"), ".-:") || (port != "" && !isName(port, "")) {
			http.Error(w, "bad Host header", http.StatusBadRequest)
			return
		}
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		a := agent
		a.URL = (&url.URL{Scheme: scheme, Host: host, Path: A2APath}).String()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(adcpa2a.NewAgentCard(a, skills))
	})
}
