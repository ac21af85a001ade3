package checkpoint

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestSaveLoadRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		edit func(*State)
	}{
		{"full", func(*State) {}},
		{"no residuals, no extra, derived run", func(s *State) { s.Residuals, s.Extra, s.Run = nil, nil, "" }},
		{"indented config", func(s *State) { s.Config = json.RawMessage("{\n  \"lr\": 1e-3,\n  \"steps\": 5\n}") }},
		{"empty optimizer", func(s *State) { s.Optim = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			st := testState(42, 17)
			tt.edit(st)
			save(t, dir, st, Options{})
			got, err := Load(stepPath(dir, 17))
			if err != nil {
				t.Fatal(err)
			}
			equalStates(t, got, st)
			if got.Dir != stepPath(dir, 17) {
				t.Errorf("Dir = %q", got.Dir)
			}
			if names := entries(t, got.Dir); !slices.Equal(names, []string{ManifestFile, ModelFile, OptimFile, ResidualsFile, StateFile}) {
				t.Errorf("checkpoint holds %v", names)
			}
		})
	}
}

func TestSaveSnapshotsAndReusesBuffers(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir, Options{Keep: -1})
	if err != nil {
		t.Fatal(err)
	}
	st := testState(1, 1)
	want := testState(1, 1)
	if err := w.Save(st); err != nil {
		t.Fatal(err)
	}
	buf := &w.snap.Model[0].Data[0]
	// The caller may change its state as soon as Save returns.
	for i := range st.Model[0].Data {
		st.Model[0].Data[i] = 99
	}
	st.Config = json.RawMessage(`{"changed":true}`)
	if err := w.Wait(); err != nil {
		t.Fatal(err)
	}
	got, err := Load(stepPath(dir, 1))
	if err != nil {
		t.Fatal(err)
	}
	equalStates(t, got, want)

	// A second save of the same layout reuses the snapshot buffers.
	st2 := testState(1, 2)
	if err := w.Save(st2); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if &w.snap.Model[0].Data[0] != buf {
		t.Error("the snapshot buffer was reallocated for an unchanged layout")
	}
	if err := w.Save(st2); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Save after Close: err = %v", err)
	}
	got, err = Load(stepPath(dir, 2))
	if err != nil {
		t.Fatal(err)
	}
	equalStates(t, got, st2)
}

func TestSaveRejectsBadState(t *testing.T) {
	tests := []struct {
		name string
		edit func(*State)
		want string
	}{
		{"negative step", func(s *State) { s.Step = -1 }, "step -1"},
		{"shape", func(s *State) { s.Model[1].Shape = []int{3} }, "model tensors"},
		{"config", func(s *State) { s.Config = json.RawMessage(`[1]`) }, "config is not a JSON object"},
		{"model config", func(s *State) { s.ModelConfig = nil }, "model config"},
		{"hash", func(s *State) { s.ModelHash = "" }, "model hash"},
		{"extra", func(s *State) { s.Extra = json.RawMessage(`{`) }, "extra"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := NewWriter(t.TempDir(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			st := testState(1, 1)
			tt.edit(st)
			if err := w.Save(st); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestSaveExistingStep(t *testing.T) {
	dir := t.TempDir()
	first := testState(1, 5)
	save(t, dir, first, Options{})
	w, _ := NewWriter(dir, Options{})

	// The same run again: already done, nothing changes.
	again := testState(1, 5)
	again.Cursor = 12345
	if err := w.Save(again); err != nil {
		t.Fatal(err)
	}
	if err := w.Wait(); err != nil {
		t.Fatalf("saving step 5 of the same run again: %v", err)
	}
	got, err := Load(stepPath(dir, 5))
	if err != nil {
		t.Fatal(err)
	}
	equalStates(t, got, first)

	// Another run: a conflict.
	if err := w.Save(testState(2, 5)); err != nil {
		t.Fatal(err)
	}
	if err := w.Wait(); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("err = %v", err)
	}
	if w.LastError() == nil {
		t.Error("LastError is nil after a failed save")
	}
	if _, err := Load(stepPath(dir, 5)); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(t, dir); len(l) > 0 {
		t.Errorf("leftovers: %v", l)
	}
}

// Two writers saving the same step into one directory: one wins, the other
// reports an error, and the checkpoint verifies.
func TestConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := NewWriter(dir, Options{})
			if err == nil {
				err = w.Save(testState(uint64(i+1), 3))
			}
			if err == nil {
				err = w.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	if errs[0] == nil && errs[1] == nil {
		t.Fatal("both writers claim to have written step 3")
	}
	if errs[0] != nil && errs[1] != nil {
		t.Fatalf("both writers failed: %v; %v", errs[0], errs[1])
	}
	if _, err := Load(stepPath(dir, 3)); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(t, dir); len(l) > 0 {
		t.Errorf("leftovers: %v", l)
	}
}

// Saves issued back to back never overlap and each is complete.
func TestSavesWaitForEachOther(t *testing.T) {
	dir := t.TempDir()
	var active, most int
	var mu sync.Mutex
	opt := Options{Keep: -1, afterFile: func(string) {
		mu.Lock()
		defer mu.Unlock()
		most = max(most, active)
	}}
	opt.create = func(p string) (file, error) {
		mu.Lock()
		if filepath.Base(p) == StateFile {
			active++
		}
		mu.Unlock()
		f, err := createFile(p)
		if filepath.Base(p) == ManifestFile {
			mu.Lock()
			active--
			mu.Unlock()
		}
		return f, err
	}
	w, err := NewWriter(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	for step := int64(1); step <= 5; step++ {
		if err := w.Save(testState(1, step)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if most != 1 {
		t.Errorf("%d saves in flight at once", most)
	}
	cps, _ := List(dir)
	if len(cps) != 5 {
		t.Fatalf("%d checkpoints, want 5", len(cps))
	}
	for _, c := range cps {
		if _, err := Load(c.Path); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, StepDir(5), ManifestFile)); err != nil {
		t.Error(err)
	}
}

func TestFind(t *testing.T) {
	st := testState(1, 1)
	if got, ok := Find(st.Optim, "lm_head.kernel.v"); !ok || &got.Data[0] != &st.Optim[7].Data[0] {
		t.Errorf("Find lm_head.kernel.v = %v, %v", got.Name, ok)
	}
	if _, ok := Find(st.Optim, "nope"); ok {
		t.Error("found a missing tensor")
	}
}

func TestSaveOwned(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir, Options{Keep: -1})
	if err != nil {
		t.Fatal(err)
	}
	// Two host copies used in turn, as the doc comment prescribes.
	bufs := []*State{testState(6, 1), testState(6, 2)}
	bufs[0].Run = ""
	want := []*State{testState(6, 1), testState(6, 2), testState(6, 3)}
	want[0].Run = ""
	for i := range 3 {
		st := bufs[i%2]
		if i == 2 {
			*st = *testState(6, 3) // refilled while step 2 (the other buffer) may be in flight
		}
		if err := w.SaveOwned(st); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for i, wst := range want {
		got, err := Load(stepPath(dir, int64(i+1)))
		if err != nil {
			t.Fatal(err)
		}
		equalStates(t, got, wst)
	}
	if w.snap.Model != nil {
		t.Error("SaveOwned allocated snapshot buffers")
	}
}
