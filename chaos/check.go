package chaos

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/difftrain/difftrain/checkpoint"
	"github.com/difftrain/difftrain/node"
)

// lastRecord returns the time and step of the last line of dir's
// metrics.jsonl, reading only the file's end.
func lastRecord(dir string) (time.Time, int64, bool) {
	r, ok := lastRec(dir)
	return r.Time, r.Step, ok
}

// tail is what the runner reads of a node's newest step record.
type tail struct {
	Time    time.Time `json:"time"`
	Step    int64     `json:"step"`
	Members int       `json:"members"`
}

// lastRec returns the last line of dir's metrics.jsonl, reading only the
// file's end.
func lastRec(dir string) (tail, bool) {
	var r tail
	f, err := os.Open(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		return r, false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return r, false
	}
	off := max(0, st.Size()-8192)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return r, false
	}
	lines := bytes.Split(bytes.TrimRight(buf, "\n"), []byte("\n"))
	if err := json.Unmarshal(lines[len(lines)-1], &r); err != nil {
		return r, false
	}
	return r, true
}

// Result is what Check found.
type Result struct {
	Steps    int64 // last step trained
	Records  int   // step records across all nodes
	Compared int   // steps compared with the reference
	Orphans  int   // steps completed only by a member killed right after
	// FirstChange is the first step whose ring size differs from the
	// previous step's (a join); the loss matches the undisturbed run at
	// 1e-4 before it.
	FirstChange int64
	Problems    []string
}

// Check verifies the records of the node directories under dir (n0, n1, …)
// as the package documentation says. ref and refMembers, if not nil, hold
// the losses and ring sizes of the same ring run undisturbed: the steps
// before the first membership change of either run must match it within
// rtol; the 100 after it (before firstKill) within 1e-2 (another ring size
// sums in another order, and the differences grow from step to step).
//
// A member killed or cut off right after it completed a step that its
// ring-mates had not (their last gradient chunks were still on the wire)
// recorded a step that died with it: the survivors redo it in a new ring.
// Such orphan records (see orphanSteps) are set aside, with their
// sample-log lines.
func Check(dir string, batch int, ref map[int64]float64, refMembers map[int64]int, firstKill int64, rtol float64) Result {
	var res Result
	bad := func(format string, args ...any) {
		if len(res.Problems) < 50 {
			res.Problems = append(res.Problems, fmt.Sprintf(format, args...))
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(dir, "n*"))
	type seen struct {
		gen     uint64
		loss    float64
		node    string
		members int
	}
	all := map[string][]node.Record{}
	for _, d := range dirs {
		recs, err := node.ReadRecordsFile(filepath.Join(d, "metrics.jsonl"))
		if err != nil {
			bad("%s: %v", d, err)
		}
		all[filepath.Base(d)] = recs
	}
	var nodes [][]node.Record
	for _, recs := range all {
		nodes = append(nodes, recs)
	}
	orphans := node.Orphans(nodes)
	res.Orphans = len(orphans)
	steps := map[int64]seen{}
	for _, d := range dirs {
		recs := all[filepath.Base(d)]
		for _, r := range recs {
			if orphans[node.StepKey{Step: r.Step, Gen: r.Generation}] {
				continue
			}
			res.Records++
			res.Steps = max(res.Steps, r.Step)
			prev, ok := steps[r.Step]
			switch {
			case !ok:
				steps[r.Step] = seen{r.Generation, r.Loss, filepath.Base(d), r.Members}
			case prev.gen != r.Generation:
				bad("step %d trained in generation %d (%s) and %d (%s)", r.Step, prev.gen, prev.node, r.Generation, filepath.Base(d))
			case math.Float64bits(prev.loss) != math.Float64bits(r.Loss):
				bad("step %d: loss %v on %s, %v on %s", r.Step, prev.loss, prev.node, r.Loss, filepath.Base(d))
			}
		}
		if b, err := os.ReadFile(filepath.Join(d, "node.log")); err == nil && strings.Contains(string(b), "checksums differ") {
			bad("%s: weight checksums differed", filepath.Base(d))
		}
	}
	for s := int64(1); s <= res.Steps; s++ {
		if _, ok := steps[s]; !ok {
			bad("step %d has no record on any node", s)
		}
	}
	change := firstKill
	for s := int64(2); s < firstKill; s++ {
		if steps[s].members != steps[s-1].members || (refMembers != nil && refMembers[s] != steps[s].members) {
			change = s
			break
		}
	}
	res.FirstChange = change
	for s, w := range ref {
		g, ok := steps[s]
		if !ok || s >= firstKill || s >= change+100 {
			continue // beyond 100 steps the summation-order differences grow past 1e-2
		}
		tol := rtol
		if s >= change {
			tol = 1e-2
		}
		res.Compared++
		if d := math.Abs(g.loss-w) / max(math.Abs(w), 1e-12); d > tol {
			bad("step %d: loss %.8g, undisturbed run %.8g (rel %.2g > %g)", s, g.loss, w, d, tol)
		}
	}
	checkSamples(dirs, res.Steps, batch, orphans, bad)
	checkFinal(dirs, bad)
	return res
}

// checkSamples checks that the sample logs tile every step's global batch
// exactly once: each completed step's split, logged by every member that
// completed it, and no step in two generations.
func checkSamples(dirs []string, last int64, batch int, orphans map[node.StepKey]bool, bad func(string, ...any)) {
	type key struct{ step, lo, hi, gen int64 }
	seen := map[key]bool{}
	ranges := map[int64][][2]int64{}
	for _, d := range dirs {
		f, err := os.Open(filepath.Join(d, "samples.log"))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var k key
			var rank int64
			if _, err := fmt.Sscan(sc.Text(), &k.step, &k.lo, &k.hi, &k.gen, &rank); err != nil {
				bad("%s: sample log line %q: %v", d, sc.Text(), err)
				break
			}
			if !seen[k] && !orphans[node.StepKey{Step: k.step + 1, Gen: uint64(k.gen)}] {
				seen[k] = true
				ranges[k.step] = append(ranges[k.step], [2]int64{k.lo, k.hi})
			}
		}
		f.Close()
	}
	// Step s of the sample log is the update that the records call s+1.
	for s := int64(0); s < last; s++ {
		count := make([]int, batch)
		for _, r := range ranges[s] {
			for k := r[0]; k < r[1]; k++ {
				if i := k - s*int64(batch); i >= 0 && i < int64(batch) {
					count[i]++
				} else {
					bad("step %d: sample %d outside the step", s, k)
				}
			}
		}
		for i, c := range count {
			if c != 1 {
				bad("step %d: sample %d trained %d times", s, s*int64(batch)+int64(i), c)
				break
			}
		}
	}
}

// checkFinal loads the newest checkpoint of every node; at least one must
// verify.
func checkFinal(dirs []string, bad func(string, ...any)) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var ok []string
	for _, d := range dirs {
		st, err := checkpoint.Resolve(filepath.Join(d, "checkpoints"), "auto", false, quiet)
		if err == nil && st != nil {
			ok = append(ok, fmt.Sprintf("%s@%d", filepath.Base(d), st.Step))
		}
	}
	if len(ok) == 0 {
		bad("no node has a checkpoint that loads")
	}
	slices.Sort(ok)
}

// Summary of recovery and rejoin times. Kill events and partition events
// are counted apart.
type Summary struct {
	Events, Coordinator, Seed, NewAddr, Conflicting, Refused int
	Recovery, CoordRecovery, Rejoin                          Spread
	Partitions, CoordPartitions                              int
	CutRecovery, Heal                                        Spread // cut to the others' next step; heal to the cut-off member's
}

// Spread is the median, 90th percentile and maximum of some durations (-1
// when there are none).
type Spread struct{ Median, P90, Max time.Duration }

func spread(d []time.Duration) Spread {
	if len(d) == 0 {
		return Spread{-1, -1, -1}
	}
	slices.Sort(d)
	return Spread{d[len(d)/2], d[(len(d)*9)/10], d[len(d)-1]}
}

func (s Spread) String() string {
	r := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	return fmt.Sprintf("median %s p90 %s max %s", r(s.Median), r(s.P90), r(s.Max))
}

// Summarize computes the figures the closing note reports.
func Summarize(evs []Event) Summary {
	var s Summary
	var rec, crec, rej, cut, heal []time.Duration
	for _, e := range evs {
		if e.Partition {
			s.Partitions++
			if e.Coordinator {
				s.CoordPartitions++
			}
			if e.Recovery >= 0 {
				cut = append(cut, e.Recovery)
			}
			if e.Rejoin >= 0 {
				heal = append(heal, e.Rejoin)
			}
			continue
		}
		s.Events++
		if e.Coordinator {
			s.Coordinator++
		}
		if e.Seed {
			s.Seed++
		}
		if e.NewAddr {
			s.NewAddr++
		}
		if e.Conflicting {
			s.Conflicting++
			if e.Refused {
				s.Refused++
			}
		}
		if e.Recovery >= 0 {
			rec = append(rec, e.Recovery)
			if e.Coordinator {
				crec = append(crec, e.Recovery)
			}
		}
		if e.Rejoin >= 0 {
			rej = append(rej, e.Rejoin)
		}
	}
	s.Recovery, s.CoordRecovery, s.Rejoin = spread(rec), spread(crec), spread(rej)
	s.CutRecovery, s.Heal = spread(cut), spread(heal)
	return s
}

func (s Summary) String() string {
	out := fmt.Sprintf("%d kill events (%d of the coordinator/seed, %d restarts on a new address, %d conflicting joiners, %d refused): recovery %s (coordinator: %s); rejoin %s",
		s.Events, s.Coordinator, s.NewAddr, s.Conflicting, s.Refused, s.Recovery, s.CoordRecovery, s.Rejoin)
	if s.Partitions > 0 {
		out += fmt.Sprintf("; %d partitions (%d of the coordinator): the others trained again %s after the cut, the cut-off member %s after the heal",
			s.Partitions, s.CoordPartitions, s.CutRecovery, s.Heal)
	}
	return out
}
