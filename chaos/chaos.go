// Package chaos is difftrain's chaos suite: it runs a small training run as
// several real `trainer` processes on 127.0.0.1, kills members with SIGKILL
// at random moments (the coordinator and the seed included), restarts them
// on the same or a new address, sends joiners with conflicting flags, and
// then checks, from the records the nodes wrote, that the run stayed
// correct: every global sample trained exactly once per step, no step
// skipped or trained in two generations, equal loss on every member, no
// diverged replicas, and a final checkpoint that loads. It measures how
// long the ring took to recover from each kill and how long a restarted
// node took to train again.
//
// With Netns, each member runs in its own network namespace (root needed),
// joined to the others by a bridge, with a cluster key, and partition
// events cut one member off from the rest for a few seconds at random
// moments between the kills: the pair must train on, the cut-off member
// must train nothing on its own, and after the heal it must train with the
// others again. scripts/chaos.sh runs the long version.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/difftrain/difftrain/allreduce/netns"
)

// Options configure a chaos run.
type Options struct {
	Bin      string        // the trainer binary
	Data     string        // a prepared dataset directory
	Dir      string        // where node run directories go
	Nodes    int           // members (default 3)
	Events   int           // kill/restart events to inject
	Duration time.Duration // at least this long (the events are spread over it)
	Steps    int           // the run's steps; 0: until the events are done (then SIGTERM)
	StopAt   int64         // with no events: stop once this step is trained (an undisturbed reference)
	Seed     uint64        // randomness of the schedule
	Conflict float64       // share of events that also start a conflicting joiner
	Netns    bool          // run each member in its own network namespace (needs root)
	// Partitions are partition events (Netns only), placed at random
	// among the kill events: one member is cut off, then healed.
	Partitions int
	Log        io.Writer // progress lines (nil: none)
	Args       []string  // extra flags for every node
}

// Event is one injected failure and how the cluster took it.
type Event struct {
	At          time.Time     // when the victim was killed
	Step        int64         // the last step completed before the kill
	Victim      string        // node slot, e.g. "n1"
	Coordinator bool          // the victim was the ring's coordinator
	Seed        bool          // the victim was the seed slot (n0)
	NewAddr     bool          // restarted on a new address
	Recovery    time.Duration // kill to the survivors' next completed step (-1: none seen)
	Rejoin      time.Duration // restart to the restarted node's first step (-1: none seen)
	Conflicting bool          // a conflicting joiner was also started (and must be refused)
	Refused     bool          // it was refused with an error naming the conflict
	// Partition events cut the victim off instead of killing it: Recovery
	// runs from the cut to the others' next step in a ring without it,
	// Rejoin from the heal to its next step in the full ring.
	Partition bool
	Cut       time.Duration // how long the victim was cut off
}

// slot is one member position; each restart is a new process in it.
type slot struct {
	name         string
	dir          string
	ns           int // network namespace (with Netns)
	gossip, grpc string
	cmd          *exec.Cmd
	done         chan error
	log          *os.File
	started      time.Time
}

type runner struct {
	o     Options
	rng   *rand.Rand
	slots []*slot
	ports map[int]bool
	lab   *netns.Lab // with Netns: member i in namespace i, conflicting joiners in the last
	key   string     // with Netns: the cluster key
}

// Run runs the chaos schedule and returns the events; Check verifies the
// records afterwards.
func Run(ctx context.Context, o Options) ([]Event, error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	r := &runner{o: o, rng: rand.New(rand.NewPCG(o.Seed, 7)), ports: map[int]bool{}}
	if o.Partitions > 0 && !o.Netns {
		return nil, fmt.Errorf("partition events need Netns")
	}
	if o.Netns {
		lab, err := netns.Setup(fmt.Sprintf("dtc%d", os.Getpid()%100000), o.Nodes+1, "10gbit", "")
		if err != nil {
			return nil, fmt.Errorf("network namespaces: %w", err)
		}
		defer lab.Close()
		r.lab = lab
		r.key = fmt.Sprintf("chaos-%016x%016x", r.rng.Uint64(), r.rng.Uint64())
	}
	defer r.stopAll()
	for i := 0; i < o.Nodes; i++ {
		s := &slot{name: fmt.Sprintf("n%d", i), dir: filepath.Join(o.Dir, fmt.Sprintf("n%d", i)), ns: i}
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			return nil, err
		}
		r.slots = append(r.slots, s)
		s.gossip, s.grpc = r.addr(s.ns), r.addr(s.ns)
		if err := r.startSlot(s, i == 0, false); err != nil {
			return nil, err
		}
		if i == 0 {
			time.Sleep(500 * time.Millisecond)
		}
	}
	if _, err := r.waitStep(r.slots, 5, time.Now(), 2*time.Minute); err != nil {
		return nil, fmt.Errorf("the ring never trained: %w", err)
	}
	if o.Events == 0 && o.StopAt > 0 {
		if _, err := r.waitStep(r.slots, o.StopAt, time.Now().Add(-time.Hour), 10*time.Minute); err != nil {
			return nil, err
		}
		return nil, r.stopAll()
	}
	var evs []Event
	total, parts := o.Events+o.Partitions, o.Partitions
	gap := o.Duration / time.Duration(max(1, total))
	for i := 0; i < total && ctx.Err() == nil; i++ {
		time.Sleep(time.Duration(float64(gap) * (0.5 + r.rng.Float64())))
		if err := r.exited(); err != nil {
			return evs, err
		}
		var ev Event
		var err error
		if r.rng.IntN(total-i) < parts {
			parts--
			ev, err = r.partition()
		} else {
			ev, err = r.event()
		}
		evs = append(evs, ev)
		r.logf("event %d/%d: %s", i+1, total, ev)
		if err != nil {
			return evs, err
		}
	}
	if o.Steps > 0 {
		for _, s := range r.slots {
			select {
			case err := <-s.done:
				s.cmd = nil
				if err != nil {
					return evs, fmt.Errorf("%s exited: %w", s.name, err)
				}
			case <-time.After(10 * time.Minute):
				return evs, fmt.Errorf("%s did not finish", s.name)
			}
		}
		return evs, nil
	}
	return evs, r.stopAll()
}

func (e Event) String() string {
	if e.Partition {
		return fmt.Sprintf("cut %s off (coordinator %v) for %v: the others trained again after %v, it trained with them %v after the heal",
			e.Victim, e.Coordinator, e.Cut.Round(time.Millisecond), e.Recovery.Round(time.Millisecond), e.Rejoin.Round(time.Millisecond))
	}
	return fmt.Sprintf("kill %s (coordinator %v, seed %v), restart on a new address %v: recovery %v, rejoin %v, conflicting joiner %v refused %v",
		e.Victim, e.Coordinator, e.Seed, e.NewAddr, e.Recovery.Round(time.Millisecond), e.Rejoin.Round(time.Millisecond), e.Conflicting, e.Refused)
}

// event kills a random live member, restarts it and measures.
func (r *runner) event() (Event, error) {
	i := r.rng.IntN(len(r.slots))
	s := r.slots[i]
	ev := Event{At: time.Now(), Victim: s.name, Seed: i == 0, Coordinator: i == 0, NewAddr: r.rng.IntN(2) == 0}
	// Names sort by slot, so the coordinator is the lowest live slot.
	for _, o := range r.slots {
		if _, st, ok := lastRecord(o.dir); ok {
			ev.Step = max(ev.Step, st)
		}
	}
	ev.At = time.Now()
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
	s.cmd = nil
	killed := time.Now()
	var survivors []*slot
	for _, o := range r.slots {
		if o != s {
			survivors = append(survivors, o)
		}
	}
	d, err := r.waitStep(survivors, -1, killed, 30*time.Second)
	ev.Recovery = d
	if err != nil {
		ev.Recovery = -1
		return ev, fmt.Errorf("after killing %s: %w", s.name, err)
	}
	time.Sleep(time.Duration(r.rng.IntN(1000)) * time.Millisecond)
	if ev.NewAddr {
		s.gossip, s.grpc = r.addr(s.ns), r.addr(s.ns)
	}
	restarted := time.Now()
	if err := r.startSlot(s, i == 0, false); err != nil {
		return ev, err
	}
	if r.rng.Float64() < r.o.Conflict {
		ev.Conflicting = true
		ok, err := r.conflicting()
		ev.Refused = ok
		if err != nil {
			return ev, err
		}
	}
	d, err = r.waitStep([]*slot{s}, -1, restarted, time.Minute)
	ev.Rejoin = d
	if err != nil {
		ev.Rejoin = -1
		return ev, fmt.Errorf("restarted %s: %w", s.name, err)
	}
	return ev, nil
}

// conflicting starts a joiner whose explicit --codec differs from the
// run's, and reports whether it was refused with an error naming it.
func (r *runner) conflicting() (bool, error) {
	dir := filepath.Join(r.o.Dir, "conflict")
	os.RemoveAll(dir)
	os.MkdirAll(dir, 0o755)
	s := &slot{name: "bad", dir: dir, ns: len(r.slots)}
	s.gossip, s.grpc = r.addr(s.ns), r.addr(s.ns)
	seed := r.live()
	args := append([]string{"join", "--seed", seed.gossip, "--codec", "int8"}, r.common(s)...)
	out, err := r.command(s, args...).CombinedOutput()
	if err == nil {
		return false, fmt.Errorf("a joiner with --codec int8 on a --codec none ring exited 0")
	}
	return strings.Contains(string(out), "--codec=int8 (the run has none)"), nil
}

func (r *runner) live() *slot {
	var ls []*slot
	for _, s := range r.slots {
		if s.cmd != nil {
			ls = append(ls, s)
		}
	}
	return ls[r.rng.IntN(len(ls))]
}

// runFlags are the training flags of the run: a tiny model, an endless
// schedule (the run is stopped when the events are done).
func runFlags(data string) []string {
	return []string{"train", "--data", data, "--layers", "2", "--dim", "32", "--heads", "2",
		"--batch", "12", "--warmup", "5", "--lr", "0.1", "--seed", "11", "--codec", "none", "--steps", "1000000000"}
}

// common are the flags of every node process in slot s.
func (r *runner) common(s *slot) []string {
	return append([]string{"--name", s.name, "--run-dir", s.dir, "--bind", s.gossip, "--grpc", s.grpc,
		"--metrics-addr", "", "--threads", "1", "--progress", "log", "--log-every", "50",
		"--sample-log", filepath.Join(s.dir, "samples.log"), "--checkpoint-local"}, r.o.Args...)
}

// startSlot starts slot s's node: the seed slot with `train` (it finds a
// running ring through --peer and its peers file), the others with `join`.
func (r *runner) startSlot(s *slot, seed, _ bool) error {
	var args []string
	if seed {
		args = append(runFlags(r.o.Data), "--min-nodes", "2", "--checksum-every", "10", "--checkpoint-every", "50", "--keep", "2")
		if r.o.Steps > 0 {
			args = append(args, "--steps", strconv.Itoa(r.o.Steps))
		}
		for _, o := range r.slots {
			if o != s && o.cmd != nil {
				args = append(args, "--peer", o.gossip)
			}
		}
	} else {
		args = []string{"join", "--seed", r.live().gossip}
	}
	args = append(args, r.common(s)...)
	f, err := os.OpenFile(filepath.Join(s.dir, "node.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := r.command(s, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	s.cmd, s.log, s.started, s.done = cmd, f, time.Now(), make(chan error, 1)
	go func() { s.done <- cmd.Wait(); f.Close() }()
	return nil
}

// command runs the trainer for slot s: in its namespace, with the cluster
// key, when the run uses namespaces.
func (r *runner) command(s *slot, args ...string) *exec.Cmd {
	if r.lab == nil {
		return exec.Command(r.o.Bin, args...)
	}
	cmd := r.lab.Command(s.ns, r.o.Bin, args...)
	cmd.Env = append(os.Environ(), "DIFFTRAIN_CLUSTER_KEY="+r.key)
	return cmd
}

// partition cuts a random member off from the others, waits until they
// train on without it, keeps it cut off a few seconds more, checks that it
// trained nothing on its own, heals the cut and waits until it trains in
// the full ring again.
func (r *runner) partition() (Event, error) {
	i := r.rng.IntN(len(r.slots))
	s := r.slots[i]
	// Names sort by slot, so the coordinator is n0.
	ev := Event{Partition: true, Victim: s.name, Seed: i == 0, Coordinator: i == 0, Recovery: -1, Rejoin: -1}
	var rest []*slot
	for _, o := range r.slots {
		if _, st, ok := lastRecord(o.dir); ok {
			ev.Step = max(ev.Step, st)
		}
		if o != s {
			rest = append(rest, o)
		}
	}
	ev.At = time.Now()
	if err := r.lab.SetLink(s.ns, false); err != nil {
		return ev, fmt.Errorf("cut %s off: %w", s.name, err)
	}
	d, err := r.waitRing(rest, len(rest), true, ev.At, 30*time.Second)
	ev.Recovery = d
	if err != nil {
		r.lab.SetLink(s.ns, true)
		return ev, fmt.Errorf("with %s cut off, the others: %w", s.name, err)
	}
	time.Sleep(time.Duration(1000+r.rng.IntN(4000)) * time.Millisecond)
	// A step completed just before the cut may be recorded just after it.
	t, st, trained := lastRecord(s.dir)
	trained = trained && t.After(ev.At.Add(time.Second))
	heal := time.Now()
	ev.Cut = heal.Sub(ev.At)
	if err := r.lab.SetLink(s.ns, true); err != nil {
		return ev, fmt.Errorf("heal %s: %w", s.name, err)
	}
	if trained {
		return ev, fmt.Errorf("%s trained step %d on its own while it was cut off", s.name, st)
	}
	d, err = r.waitRing([]*slot{s}, len(r.slots), false, heal, time.Minute)
	ev.Rejoin = d
	if err != nil {
		ev.Rejoin = -1
		return ev, fmt.Errorf("%s after the heal: %w", s.name, err)
	}
	return ev, nil
}

// exited reports a node that stopped on its own: the run stopped.
func (r *runner) exited() error {
	for _, s := range r.slots {
		select {
		case err := <-s.done:
			s.cmd = nil
			return fmt.Errorf("%s exited by itself: %v (see %s)", s.name, err, filepath.Join(s.dir, "node.log"))
		default:
		}
	}
	return nil
}

// waitStep waits until one of slots records a step completed after since
// (and at least step, if step >= 0), and returns how long after since.
func (r *runner) waitStep(slots []*slot, step int64, since time.Time, limit time.Duration) (time.Duration, error) {
	return waitFor(slots, since, limit, fmt.Sprintf("no step completed within %v", limit),
		func(t tail) bool { return t.Step >= step })
}

// waitRing waits until one of slots records a step completed after since
// in a ring of members members (exactly, or at least).
func (r *runner) waitRing(slots []*slot, members int, exact bool, since time.Time, limit time.Duration) (time.Duration, error) {
	return waitFor(slots, since, limit, fmt.Sprintf("no step in a ring of %d within %v", members, limit),
		func(t tail) bool { return t.Members == members || !exact && t.Members > members })
}

// waitFor polls the newest record of each of slots until one completed
// after since satisfies ok, and returns how long after since.
func waitFor(slots []*slot, since time.Time, limit time.Duration, fail string, ok func(tail) bool) (time.Duration, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		for _, s := range slots {
			if t, found := lastRec(s.dir); found && t.Time.After(since) && ok(t) {
				return t.Time.Sub(since), nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return -1, errors.New(fail)
}

// addr returns an address for a member in namespace ns whose port is
// free, in 10000-19999 (below the ephemeral range, and apart from the node
// tests' 20000-31999, which may run at the same time), never handed out
// twice in a run. Without namespaces it is on 127.0.0.1 and checked free
// for TCP and UDP; a fresh namespace has only the run's own ports.
func (r *runner) addr(ns int) string {
	for {
		p := 10000 + r.rng.IntN(10000)
		if r.ports[p] {
			continue
		}
		if r.lab != nil {
			r.ports[p] = true
			return fmt.Sprintf("%s:%d", r.lab.Addrs[ns], p)
		}
		a := fmt.Sprintf("127.0.0.1:%d", p)
		l, err := net.Listen("tcp", a)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", a)
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		r.ports[p] = true
		return a
	}
}

// stopAll stops every node with SIGTERM (a clean stop with a checkpoint),
// then SIGKILL after a while, and reports a node that failed to stop cleanly.
func (r *runner) stopAll() error {
	var live []*slot
	for _, s := range r.slots {
		if s.cmd != nil {
			s.cmd.Process.Signal(syscall.SIGTERM)
			live = append(live, s)
		}
	}
	var errs []string
	for _, s := range live {
		select {
		case err := <-s.done:
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", s.name, err))
			}
		case <-time.After(30 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
			errs = append(errs, s.name+": did not stop within 30s of SIGTERM")
		}
		s.cmd = nil
	}
	slices.Sort(errs)
	if len(errs) > 0 {
		return fmt.Errorf("stopping: %s", strings.Join(errs, "; "))
	}
	return nil
}

func (r *runner) logf(format string, args ...any) {
	if r.o.Log != nil {
		fmt.Fprintf(r.o.Log, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}
}
