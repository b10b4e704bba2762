package integration

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/adcp-go/idempotency/idem"
)

// The crash matrix of a Guard on Redis (issue 18, item 4), like the
// Postgres one (crash_test.go): a child process runs one request through
// idem.Do on redisstore and is killed with SIGKILL at a crash point (see
// redisCrashPoints); then the buyer retries with the same key, through a
// Guard in this process with the same lease, until it gets an answer.
//
// What the Guard promises, and what is asserted:
//
//   - killed before Complete was sent (claim, after_claim): the retry
//     never replays; if the claim reached Redis the retry gets
//     IDEMPOTENCY_IN_FLIGHT until the lease ends, then runs the handler;
//   - killed after the handler, before Complete (after_handler): the same,
//     so the handler has run twice, unless the kill landed after Complete
//     reached Redis, when the retry replays: the documented crash window of
//     a backend that cannot commit with the business write;
//   - killed after Complete (after_complete): the retry replays the
//     child's answer, and the handler ran once.
//
// The figures count, per point, where the kills landed, how the retries
// were answered, the IDEMPOTENCY_IN_FLIGHT answers before them and the
// handler runs.

func TestReliabilityRedisCrashMatrix(t *testing.T) {
	needRedis(t)
	t.Parallel()
	ctx := context.Background()
	kills := knob("REDIS_KILLS", 3, 20)
	const leaseMs = 1000
	prefix := "rcrash-" + randomID(6)
	rdb := newRedisClient(t, redisURL, nil)
	g, err := idem.NewGuard(newRedisStore(t, rdb, prefix), &idem.Config{
		Limiter: idem.Unlimited, Lease: leaseMs * time.Millisecond, Duplicates: idem.RejectInFlight,
	})
	if err != nil {
		t.Fatal(err)
	}

	type job struct {
		point crashPoint
		i     int
	}
	var jobs []job
	for i := range kills {
		for _, p := range redisCrashPoints {
			jobs = append(jobs, job{p, i})
		}
	}
	var landed tally
	var mu sync.Mutex
	// Per point where the kill landed (the last one the child passed):
	type landing struct {
		kills, executed, replayed, runs, inFlight int
		waited                                    time.Duration // the longest wait for an answer
	}
	at := map[string]*landing{}
	for _, p := range redisCrashPoints {
		at[p.name] = &landing{}
	}
	start := time.Now()
	runJobs(t, 2, jobs, func(_ int, j job) error {
		key := fmt.Sprintf("rcrash-%s-%03d-%s", j.point.name, j.i, randomID(4))
		budget := 1000 + j.i
		c, _, err := startGuardChild(guardSpec{Mode: "crash", Gen: 1, RedisURL: redisURL, Prefix: prefix, LeaseMs: leaseMs,
			Key: key, Budget: budget, Point: j.point.name, PauseMs: 2 * killJitterMs})
		if err != nil {
			return err
		}
		if _, err := c.waitLine("STAGE "+j.point.name, 60*time.Second); err != nil {
			c.kill()
			return fmt.Errorf("%s: %w", key, err)
		}
		time.Sleep(jitter(killJitterMs))
		lines := c.kill()
		last := reached(redisCrashPoints, lines)
		if last == pointIndex(redisCrashPoints, j.point.name) {
			landed.add(j.point.name + ":at")
		} else {
			landed.add(j.point.name + ":later")
		}

		// The retry: again after IN_FLIGHT (and a storage error), as a
		// buyer does, until the answer.
		req := request("alice", key, chaosPayload(budget))
		began := time.Now()
		var res idem.Result[chaosBuy]
		busy := 0
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			res, err = idem.Do(ctx, g, req, func(ctx context.Context) (chaosBuy, error) {
				id := runID(0, 1)
				if err := rdb.RPush(ctx, runsKey(prefix, key), id).Err(); err != nil {
					return chaosBuy{}, err
				}
				return chaosBuy{ID: id, Budget: budget}, nil
			})
			if !errors.Is(err, idem.ErrInFlight) && !errors.Is(err, idem.ErrStorage) || time.Now().After(deadline) {
				break
			}
			if errors.Is(err, idem.ErrInFlight) {
				busy++
			}
		}
		wait := time.Since(began)
		if err != nil {
			return fmt.Errorf("%s (killed after %s): retry: %v", key, redisCrashPoints[last].name, err)
		}
		ids, err := rdb.LRange(ctx, runsKey(prefix, key), 0, -1).Result()
		if err != nil {
			return err
		}
		mu.Lock()
		l := at[redisCrashPoints[last].name]
		l.kills++
		if res.Replayed {
			l.replayed++
		} else {
			l.executed++
		}
		l.runs += len(ids)
		l.inFlight += busy
		l.waited = max(l.waited, wait)
		mu.Unlock()

		got := strconv.FormatInt(res.Value.ID, 10)
		switch {
		case last < pointIndex(redisCrashPoints, "after_handler") && res.Replayed:
			return fmt.Errorf("%s: the child never sent Complete (last point %s), but the retry replayed %+v", key, redisCrashPoints[last].name, res.Value)
		case last == pointIndex(redisCrashPoints, "after_complete") && (!res.Replayed || len(ids) != 1):
			return fmt.Errorf("%s: the child stored its answer, but the retry answered %+v (replayed %v) with %d runs", key, res.Value, res.Replayed, len(ids))
		case last < pointIndex(redisCrashPoints, "after_claim") && len(ids) != 1:
			return fmt.Errorf("%s: killed before the handler, yet %d runs", key, len(ids))
		case len(ids) < 1 || len(ids) > 2 || res.Replayed && len(ids) != 1:
			return fmt.Errorf("%s (killed after %s): %d runs, retry replayed=%v", key, redisCrashPoints[last].name, len(ids), res.Replayed)
		case res.Value.Budget != budget || got != ids[len(ids)-1]:
			return fmt.Errorf("%s: the retry answered %+v; the runs were %v", key, res.Value, ids)
		}
		again, err := idem.Do(ctx, g, req, func(context.Context) (chaosBuy, error) {
			return chaosBuy{}, errors.New("ran a third time")
		})
		if err != nil || !again.Replayed || again.Value != res.Value {
			return fmt.Errorf("%s: second retry = %+v, %v; want the replay of %+v", key, again.Value, err, res.Value)
		}
		return nil
	})
	perPoint := make([]string, 0, len(redisCrashPoints))
	for _, p := range redisCrashPoints {
		l := at[p.name]
		perPoint = append(perPoint, fmt.Sprintf("landed at %s: %d kills, retries executed %d / replayed %d, %d handler runs, %d IN_FLIGHT answers first, longest wait %v",
			p.name, l.kills, l.executed, l.replayed, l.runs, l.inFlight, l.waited.Round(10*time.Millisecond)))
	}
	figure(t, "crash matrix (Guard on redisstore)", "%d points x %d kills = %d SIGKILLs in %v, lease %d ms; kills landed: %s; %s",
		len(redisCrashPoints), kills, len(jobs), time.Since(start).Round(time.Second), leaseMs, landed.String(), strings.Join(perPoint, "; "))
}
