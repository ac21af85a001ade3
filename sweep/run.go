package sweep

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/difftrain/difftrain/scaling"
)

// RunOptions say how to run a sweep's runs.
type RunOptions struct {
	Bin             string   // the trainer binary
	Data            string   // dataset directory (default: the manifest's)
	Jobs            int      // runs at a time
	CheckpointEvery int      // steps between checkpoints of each run
	Extra           []string // more `trainer train` flags, e.g. --threads 1
	Progress        io.Writer
	Every           time.Duration // progress line interval
	Log             *slog.Logger
}

// DoneFile marks a run directory whose run reached its planned steps.
const DoneFile = "done"

// Run trains every planned run of the sweep in dir that is not done yet, K
// at a time, each as `trainer train` in its run directory: resumed from its
// newest checkpoint when it has one. When ctx ends the children get SIGTERM
// (they checkpoint and stop) and Run returns; children also get SIGTERM if
// this process dies. Running it again finishes the grid.
func Run(ctx context.Context, dir string, o RunOptions) error {
	m, err := Load(dir)
	if err != nil {
		return err
	}
	if o.Data == "" {
		o.Data = m.Data
	}
	if o.Data == "" {
		return fmt.Errorf("sweep %s: no dataset (give --data)", dir)
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	o.Jobs = max(o.Jobs, 1)
	var todo []scaling.Run
	for _, r := range m.Runs {
		if !Done(dir, r) {
			todo = append(todo, r)
		}
	}
	o.Log.Info("sweep", "dir", dir, "runs", len(m.Runs), "done", len(m.Runs)-len(todo), "to run", len(todo), "jobs", o.Jobs)
	stop := make(chan struct{})
	var pw sync.WaitGroup
	if o.Progress != nil && o.Every > 0 {
		pw.Add(1)
		go func() {
			defer pw.Done()
			t := time.NewTicker(o.Every)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					fmt.Fprintln(o.Progress, Progress(dir, m))
				}
			}
		}()
	}
	failed := each(ctx, o.Jobs, todo, func(r scaling.Run) error {
		err := runOne(ctx, dir, r, o)
		if err != nil {
			o.Log.Error("sweep run failed", "run", r.Name, "err", err)
		} else if o.Progress != nil {
			fmt.Fprintln(o.Progress, Progress(dir, m))
		}
		return err
	})
	close(stop)
	pw.Wait()
	if ctx.Err() != nil {
		return fmt.Errorf("sweep %s: stopped (run it again to go on): %w", dir, ctx.Err())
	}
	if len(failed) > 0 {
		return fmt.Errorf("sweep %s: %d runs failed: %w", dir, len(failed), errors.Join(failed...))
	}
	return nil
}

// Done reports whether a run has reached its planned steps: its done mark,
// written when its process finished them.
func Done(dir string, r scaling.Run) bool {
	b, err := os.ReadFile(filepath.Join(RunDir(dir, r.Name), DoneFile))
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return err == nil && n >= r.Steps
}

// lastStep is the last step in a run directory's metrics (0 without).
func lastStep(runDir string) int64 {
	f, err := os.Open(filepath.Join(runDir, "metrics.jsonl"))
	if err != nil {
		return 0
	}
	defer f.Close()
	c, err := scaling.ReadCurve(f)
	if err != nil || len(c) == 0 {
		return 0
	}
	return c[len(c)-1].Step
}

// Progress is one line on the state of the grid.
func Progress(dir string, m *Manifest) string {
	done, steps, total := 0, 0.0, 0.0
	var flops, allFlops float64
	for _, r := range m.Runs {
		s := float64(r.Steps)
		if !Done(dir, r) {
			s = float64(min(lastStep(RunDir(dir, r.Name)), int64(r.Steps)))
		} else {
			done++
		}
		steps, total = steps+s, total+float64(r.Steps)
		flops, allFlops = flops+r.Compute*s/float64(r.Steps), allFlops+r.Compute
	}
	return fmt.Sprintf("sweep: %d/%d runs done, %.0f/%.0f steps, %.3g/%.3g FLOPs (%.1f%%)", done, len(m.Runs), steps, total, flops, allFlops, 100*flops/allFlops)
}

// runOne trains one run to its planned steps in a child process.
func runOne(ctx context.Context, dir string, r scaling.Run, o RunOptions) error {
	rd := RunDir(dir, r.Name)
	if err := waitStale(ctx, rd); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(rd, "train.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("run log: %w", err)
	}
	defer logf.Close()
	args := []string{"train", "--config", ConfigPath(dir, r.Name), "--run-dir", rd, "--data", o.Data,
		"--resume", "auto", "--checkpoint-every", strconv.Itoa(max(o.CheckpointEvery, 0)), "--progress", "log",
		"--metrics-addr", "", "--bind", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--checksum-every", "0"}
	args = append(args, o.Extra...)
	o.Log.Info("sweep run start", "run", r.Name, "steps", r.Steps, "metrics at step", lastStep(rd))
	// Pdeathsig fires when the thread that started the child ends: keep
	// this goroutine on its thread until the child is gone.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command(o.Bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", o.Bin, err)
	}
	pidPath := filepath.Join(rd, "pid")
	os.WriteFile(pidPath, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err = <-exited:
	case <-ctx.Done():
		cmd.Process.Signal(syscall.SIGTERM)
		err = <-exited
	}
	os.Remove(pidPath)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("trainer exited: %w (log: %s)", err, filepath.Join(rd, "train.log"))
	}
	if s := lastStep(rd); s < int64(r.Steps) {
		return fmt.Errorf("trainer stopped at step %d of %d (log: %s)", s, r.Steps, filepath.Join(rd, "train.log"))
	}
	o.Log.Info("sweep run done", "run", r.Name)
	return writeFile(filepath.Join(rd, DoneFile), []byte(strconv.Itoa(r.Steps)+"\n"))
}

// waitStale waits for a trainer that an earlier, killed sweep started in
// runDir to finish checkpointing and exit.
func waitStale(ctx context.Context, runDir string) error {
	b, err := os.ReadFile(filepath.Join(runDir, "pid"))
	if err != nil {
		return nil
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return nil
	}
	for {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if errors.Is(err, os.ErrNotExist) || err != nil || !strings.Contains(string(cmdline), runDir) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// each calls fn for every run of todo, jobs at a time, until ctx ends, and
// returns the failures, each prefixed with its run's name.
func each(ctx context.Context, jobs int, todo []scaling.Run, fn func(scaling.Run) error) []error {
	queue := make(chan scaling.Run)
	var mu sync.Mutex
	var failed []error
	var wg sync.WaitGroup
	for range max(jobs, 1) {
		wg.Go(func() {
			for r := range queue {
				if err := fn(r); err != nil {
					mu.Lock()
					failed = append(failed, fmt.Errorf("%s: %w", r.Name, err))
					mu.Unlock()
				}
			}
		})
	}
feed:
	for _, r := range todo {
		select {
		case queue <- r:
		case <-ctx.Done():
			break feed
		}
	}
	close(queue)
	wg.Wait()
	return failed
}
