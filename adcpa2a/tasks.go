package adcpa2a

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/a2aproject/a2a-go/a2a"
	"github.com/a2aproject/a2a-go/a2asrv"
)

// taskStore is the a2asrv.TaskStore of a Handler: the tasks it answered,
// each readable only by the principal that sent it, kept in memory up to a
// total JSON size, oldest evicted first (the newest always stays, so that
// a2asrv can read back the task it just saved).
type taskStore struct {
	max int64

	mu    sync.Mutex
	size  int64
	tasks map[a2a.TaskID]storedTask
	order []a2a.TaskID // by first save, oldest first, from head
	head  int
}

type storedTask struct {
	owner string
	data  []byte // the task's JSON
}

var _ a2asrv.TaskStore = (*taskStore)(nil)

func newTaskStore(maxBytes int64) *taskStore {
	return &taskStore{max: maxBytes, tasks: make(map[a2a.TaskID]storedTask)}
}

// Save implements a2asrv.TaskStore. The task is stored without its history:
// the request message may carry credentials (a webhook secret in the
// arguments), and this package's tasks never need it.
func (s *taskStore) Save(ctx context.Context, task *a2a.Task) error {
	owner := principalFrom(ctx)
	if owner == "" {
		return fmt.Errorf("adcpa2a: saving a task without a principal: %w", a2a.ErrInternalError)
	}
	t := *task
	t.History = nil
	data, err := json.Marshal(&t)
	if err != nil {
		return fmt.Errorf("adcpa2a: encoding a task: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, ok := s.tasks[t.ID]; ok {
		if prev.owner != owner {
			return a2a.ErrTaskNotFound
		}
		s.size -= int64(len(prev.data))
	} else {
		s.order = append(s.order, t.ID)
	}
	s.tasks[t.ID] = storedTask{owner: owner, data: data}
	s.size += int64(len(data))
	for s.size > s.max && len(s.tasks) > 1 {
		oldest := s.order[s.head]
		s.head++
		s.size -= int64(len(s.tasks[oldest].data))
		delete(s.tasks, oldest)
	}
	if s.head > len(s.order)/2 {
		s.order = append(s.order[:0], s.order[s.head:]...)
		s.head = 0
	}
	return nil
}

// Get implements a2asrv.TaskStore: another principal's task is not found.
func (s *taskStore) Get(ctx context.Context, id a2a.TaskID) (*a2a.Task, error) {
	s.mu.Lock()
	st, ok := s.tasks[id]
	s.mu.Unlock()
	if !ok || st.owner != principalFrom(ctx) {
		return nil, a2a.ErrTaskNotFound
	}
	var t a2a.Task
	if err := json.Unmarshal(st.data, &t); err != nil {
		return nil, fmt.Errorf("adcpa2a: decoding a task: %w", err)
	}
	return &t, nil
}
