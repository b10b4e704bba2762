package seller

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/webhook"
)

// Tasks: a submitted create_media_buy completes later, once. Completion
// makes the media buy, records the task's result and queues its webhook,
// all in one transaction (Postgres) or all-or-nothing (memory); the
// scheduled completion and comply_test_controller's force_task_completion
// race safely, because only the first finds the task still submitted.

// taskIDPattern is what a task id may look like.
var taskIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,255}$`)

// newTaskID is a fresh task id, or forced (the id comply_test_controller
// chose) if it is not taken.
func newTaskID(ctx context.Context, w writer, forced string) (string, error) {
	if forced == "" {
		return "task_" + randomHex(10), nil
	}
	taken, err := w.taskExists(ctx, forced)
	if err != nil {
		return "", err
	}
	if taken {
		return "", &adcp.Error{Code: "INVALID_STATE", Message: "the task_id that force_create_media_buy_arm chose is already taken; force the arm again with a fresh task_id", Recovery: "correctable"}
	}
	return forced, nil
}

// completeTask completes submitted task id: with result as its outcome
// when set (force_task_completion), else with the media buy it was
// submitted for. It reports false if the task was not pending.
func (s *Seller) completeTask(ctx context.Context, id string, result json.RawMessage) (bool, error) {
	return s.store.finish(ctx, id, func(ctx context.Context, w writer, t *task) error {
		now := time.Now().UTC()
		v := versionOf(t.Version)
		if t.Buy != nil {
			b := *t.Buy
			if result != nil {
				// A forced outcome that names a media buy names the one
				// made, so get_media_buys agrees with the result.
				var named struct {
					ID string `json:"media_buy_id"`
				}
				if json.Unmarshal(result, &named) == nil && named.ID != "" {
					b.ID = named.ID
					for i := range b.Packages {
						b.Packages[i].PackageID = fmt.Sprintf("%s_p%d", b.ID, i+1)
					}
				}
			}
			b.ConfirmedAt = now.Truncate(time.Second)
			if err := w.putBuy(ctx, b, true); err != nil {
				return err
			}
			t.Buy = &b
			if result == nil {
				result = mustJSON(buyAnswer(b, v, ""))
			}
		}
		t.Status, t.Result, t.UpdatedAt, t.CompletedAt = "completed", result, now, &now
		if err := w.putTask(ctx, *t, false); err != nil {
			return err
		}
		return s.notifyTask(ctx, w, t)
	})
}

// notifyTask queues the webhook reporting t's status, if t registered one.
func (s *Seller) notifyTask(ctx context.Context, w writer, t *task) error {
	if t.Push == nil {
		return nil
	}
	n := webhook.Notification{TaskID: t.ID, TaskType: t.Type, Status: webhook.Status(t.Status), Protocol: "media-buy", Context: t.Context}
	if t.Result != nil {
		n.Result = t.Result
	}
	d, err := webhook.NewDelivery(*t.Push, n)
	if err != nil {
		return fmt.Errorf("building the webhook: %w", err)
	}
	return w.notify(ctx, d)
}

// taskStatus is get_task_status's answer. Its status is the task's, which
// the envelope keeps (a submitted task answers status submitted).
type taskStatus struct {
	TaskID      string          `json:"task_id"`
	TaskType    string          `json:"task_type"`
	Protocol    string          `json:"protocol"`
	Status      string          `json:"status"`
	CreatedAt   string          `json:"created_at"`
	UpdatedAt   string          `json:"updated_at"`
	CompletedAt string          `json:"completed_at,omitempty"`
	HasWebhook  bool            `json:"has_webhook"`
	Result      json.RawMessage `json:"result,omitempty"`
}

// getTaskStatus is get_task_status: one of the caller's tasks. A task of
// another principal is answered exactly like one that does not exist.
func (s *Seller) getTaskStatus(ctx context.Context, c *adcp.Call) (taskStatus, error) {
	var req taskStatusRequest
	if err := c.Decode(&req); err != nil {
		return taskStatus{}, err
	}
	if !taskIDPattern.MatchString(req.TaskID) {
		return taskStatus{}, badRequest("task_id", "task_id must be 1 to 255 characters, each a letter, digit, '_', '.', ':' or '-'")
	}
	t, ok, err := s.store.task(ctx, c.Principal, req.TaskID)
	if err != nil {
		return taskStatus{}, err
	}
	if !ok {
		return taskStatus{}, &adcp.Error{Code: "REFERENCE_NOT_FOUND", Message: "no task with this task_id for the caller", Recovery: "correctable", Field: "task_id"}
	}
	out := taskStatus{TaskID: t.ID, TaskType: t.Type, Protocol: "media-buy", Status: t.Status,
		CreatedAt: t.CreatedAt.Format(time.RFC3339), UpdatedAt: t.UpdatedAt.Format(time.RFC3339), HasWebhook: t.Push != nil}
	if t.CompletedAt != nil {
		out.CompletedAt = t.CompletedAt.Format(time.RFC3339)
	}
	if req.IncludeResult {
		out.Result = t.Result
	}
	return out, nil
}

// versionOf parses the release a task was served at ("3.2").
func versionOf(s string) adcp.Version {
	var v adcp.Version
	if _, err := fmt.Sscanf(s, "%d.%d", &v.Major, &v.Minor); err != nil {
		return adcp.V3_0
	}
	return v
}
