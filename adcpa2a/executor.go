package adcpa2a

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/a2aproject/a2a-go/a2a"
	"github.com/a2aproject/a2a-go/a2asrv"
	"github.com/a2aproject/a2a-go/a2asrv/eventqueue"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/idem"
)

// The artifact names, as the AdCP SDKs' A2A adapters name them.
const (
	artifactResult    = "result"
	artifactSubmitted = "submitted"
	artifactError     = "error"
)

// executor is the a2asrv.AgentExecutor: it runs the invocation that
// ServeHTTP decoded and checked, and answers with a completed task.
type executor struct {
	log *slog.Logger
}

var _ a2asrv.AgentExecutor = executor{}

// errRunnerAnswer is answered (as SERVICE_UNAVAILABLE, without details)
// when a runner's answer is not a JSON object.
var errRunnerAnswer = errors.New("adcpa2a: the runner's answer is not a JSON object")

// errNoInvocation: a2asrv ran the executor for a message that did not come
// through ServeHTTP. It cannot happen through a Handler.
var errNoInvocation = errors.New("adcpa2a: the message reached the executor without a decoded invocation")

// Execute implements a2asrv.AgentExecutor. Its context is the request's,
// detached from its cancellation by a2asrv: work that has started finishes
// (and stores its answer) even if the caller goes away.
func (e executor) Execute(ctx context.Context, rc *a2asrv.RequestContext, q eventqueue.Queue) error {
	inv, _ := ctx.Value(invocationKey).(*invocation)
	if inv == nil {
		return errNoInvocation
	}
	ans := inv.run(ctx, adcp.Task{Tool: inv.skill, Principal: principalFrom(ctx), Arguments: inv.input})
	return q.Write(ctx, answerTask(rc, ans, e.log))
}

// Cancel implements a2asrv.AgentExecutor: an AdCP invocation cannot be
// canceled (its task is done when it is returned; a2asrv refuses to cancel
// a task in a terminal state before asking).
func (executor) Cancel(context.Context, *a2asrv.RequestContext, eventqueue.Queue) error {
	return a2a.ErrTaskNotCancelable
}

// answerTask is the completed task of an answer: one artifact with one
// DataPart holding the answer's body. Numbers keep their spelling.
func answerTask(rc *a2asrv.RequestContext, ans adcp.Answer, log *slog.Logger) *a2a.Task {
	var data map[string]any
	dec := json.NewDecoder(bytes.NewReader(ans.Body))
	dec.UseNumber()
	if err := dec.Decode(&data); err != nil || data == nil {
		// adcp's runners answer JSON objects: this is a runner bug.
		log.Error(errRunnerAnswer.Error(), "task_id", rc.TaskID)
		ans.IsError = true
		data = map[string]any{"adcp_error": idem.Wire(errRunnerAnswer)}
	}
	artifact := &a2a.Artifact{
		ID:         a2a.NewArtifactID(),
		Name:       artifactResult,
		Parts:      a2a.ContentParts{a2a.DataPart{Data: data}},
		Extensions: []string{ExtensionURI},
	}
	if ans.IsError {
		artifact.Name = artifactError
	} else if status, _ := data["status"].(string); status == "submitted" {
		if id, _ := data["task_id"].(string); id != "" {
			artifact.Name = artifactSubmitted
			artifact.Metadata = map[string]any{"adcp_task_id": id}
		}
	}
	now := time.Now().UTC()
	return &a2a.Task{
		ID:        rc.TaskID,
		ContextID: rc.ContextID,
		Status:    a2a.TaskStatus{State: a2a.TaskStateCompleted, Timestamp: &now},
		Artifacts: []*a2a.Artifact{artifact},
	}
}
