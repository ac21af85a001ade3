package checkpoint

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// A save for a step whose directory does not verify (a flipped byte in the
// weights, a deleted manifest, an empty directory made by hand) replaces it
// with the new checkpoint, through the atomic exchange and through the
// two-rename fallback. Before, the first case logged "checkpoint already
// saved" and kept the damage; the others failed with "already exists and is
// not of run".
func TestSaveReplacesDamagedStep(t *testing.T) {
	damage := map[string]func(t *testing.T, dir string){
		"flipped weight byte": func(t *testing.T, dir string) {
			p := filepath.Join(dir, ModelFile)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)-3] ^= 0x40
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		},
		"manifest deleted": func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, ManifestFile)); err != nil {
				t.Fatal(err)
			}
		},
		"empty directory": func(t *testing.T, dir string) {
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		},
	}
	for _, fallback := range []bool{false, true} {
		for name, spoil := range damage {
			t.Run(name+map[bool]string{false: "", true: " (no exchange)"}[fallback], func(t *testing.T) {
				if fallback {
					saved := exchange
					exchange = func(a, b string) error { return errNoExchange }
					t.Cleanup(func() { exchange = saved })
				}
				dir := t.TempDir()
				save(t, dir, testState(1, 5), Options{})
				spoil(t, stepPath(dir, 5))
				fresh := testState(1, 5)
				fresh.Cursor = 777 // tell the new save from the old
				save(t, dir, fresh, Options{})
				got, err := Load(stepPath(dir, 5))
				if err != nil {
					t.Fatalf("after the save: %v", err)
				}
				equalStates(t, got, fresh)
				if l := leftovers(t, dir); len(l) > 0 {
					t.Errorf("leftovers: %v", l)
				}
			})
		}
	}
}

// A valid checkpoint is never replaced: of this run it is already saved,
// of another run the save is a conflict.
func TestSaveKeepsValidStep(t *testing.T) {
	dir := t.TempDir()
	first := testState(1, 5)
	save(t, dir, first, Options{})
	other := testState(2, 5)
	w, err := NewWriter(dir, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Save(other); err != nil {
		t.Fatal(err)
	}
	if err := w.Wait(); err == nil || !strings.Contains(err.Error(), "not of run") {
		t.Fatalf("saving another run's step over a valid one: err %v, want a conflict", err)
	}
	got, err := Load(stepPath(dir, 5))
	if err != nil {
		t.Fatal(err)
	}
	equalStates(t, got, first)
}

// OnDone reports every background save with its outcome before Wait
// returns, and Busy tells whether one is in flight.
func TestOnDoneAndBusy(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var steps []int64
	var errs []error
	release := make(chan struct{})
	var fail bool
	opt := Options{create: func(path string) (file, error) {
		if fail {
			return nil, errors.New("disk on fire")
		}
		return createFile(path)
	}, Logger: slog.New(slog.DiscardHandler), OnDone: func(step int64, err error) {
		mu.Lock()
		steps, errs = append(steps, step), append(errs, err)
		mu.Unlock()
	}, afterFile: func(string) { <-release }}
	w, err := NewWriter(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Save(testState(1, 3)); err != nil {
		t.Fatal(err)
	}
	if !w.Busy() {
		t.Error("Busy is false while a save waits in afterFile")
	}
	close(release)
	if err := w.Wait(); err != nil {
		t.Fatal(err)
	}
	if w.Busy() {
		t.Error("Busy after Wait")
	}
	fail = true // no other save is in flight
	if err := w.Save(testState(1, 4)); err != nil {
		t.Fatal(err)
	}
	werr := w.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(steps) != 2 || steps[0] != 3 || steps[1] != 4 || errs[0] != nil || errs[1] == nil || !errors.Is(errs[1], werr) {
		t.Fatalf("OnDone saw steps %v errors %v; Wait %v", steps, errs, werr)
	}
}
