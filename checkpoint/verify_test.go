package checkpoint

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Each damage is detected by Load and named by file, skipped by Resolve in
// auto mode (which falls back to the older checkpoint) and fatal with a path.
func TestDamagedCheckpoint(t *testing.T) {
	flip := func(name string, at func(size int64) int64) func(*testing.T, string) {
		return func(t *testing.T, p string) {
			b, err := os.ReadFile(filepath.Join(p, name))
			if err != nil {
				t.Fatal(err)
			}
			b[at(int64(len(b)))] ^= 0x40
			if err := os.WriteFile(filepath.Join(p, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, path string)
		want   []string // substrings of the error
	}{
		{"flipped weight byte", flip(ModelFile, func(n int64) int64 { return n - 100 }), []string{ModelFile, "sha256", "damaged"}},
		{"flipped header byte", flip(OptimFile, func(int64) int64 { return 20 }), []string{OptimFile, "sha256"}},
		{"flipped state byte", flip(StateFile, func(n int64) int64 { return n / 2 }), []string{StateFile, "sha256"}},
		{"truncated", func(t *testing.T, p string) {
			f := filepath.Join(p, OptimFile)
			fi, _ := os.Stat(f)
			if err := os.Truncate(f, fi.Size()-4); err != nil {
				t.Fatal(err)
			}
		}, []string{OptimFile, "truncated"}},
		{"missing file", func(t *testing.T, p string) {
			if err := os.Remove(filepath.Join(p, ResidualsFile)); err != nil {
				t.Fatal(err)
			}
		}, []string{ResidualsFile, "missing"}},
		{"garbage manifest", func(t *testing.T, p string) {
			if err := os.WriteFile(filepath.Join(p, ManifestFile), []byte("{"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{ManifestFile, "unexpected EOF"}},
		{"missing manifest", func(t *testing.T, p string) {
			if err := os.Remove(filepath.Join(p, ManifestFile)); err != nil {
				t.Fatal(err)
			}
		}, []string{ManifestFile, "missing"}},
		{"manifest of another run", func(t *testing.T, p string) {
			other := t.TempDir()
			save(t, other, testState(77, 2), Options{})
			copyFile(t, filepath.Join(stepPath(other, 2), ManifestFile), filepath.Join(p, ManifestFile))
		}, []string{ManifestFile, "another checkpoint", `run "run-77"`}},
		{"manifest of another step", func(t *testing.T, p string) {
			copyFile(t, filepath.Join(stepPath(filepath.Dir(p), 1), ManifestFile), filepath.Join(p, ManifestFile))
		}, []string{ManifestFile, "step 1", "step-00000002"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			first := testState(5, 1)
			save(t, dir, first, Options{})
			save(t, dir, testState(5, 2), Options{})
			bad := stepPath(dir, 2)
			tt.damage(t, bad)

			_, err := Load(bad)
			t.Log(err)
			if err == nil {
				t.Fatal("Load accepted the damaged checkpoint")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load error %q does not mention %q", err, w)
				}
			}

			log, logs := newLog()
			got, err := Resolve(dir, ResumeAuto, false, log)
			if err != nil {
				t.Fatal(err)
			}
			equalStates(t, got, first)
			if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, tt.want[0]) {
				t.Errorf("no warning naming %s:\n%s", tt.want[0], l)
			}

			if _, err := Resolve(dir, bad, false, log); err == nil || !strings.Contains(err.Error(), tt.want[0]) {
				t.Errorf("Resolve with the path: err = %v, want it fatal and naming %s", err, tt.want[0])
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestResolveModes(t *testing.T) {
	t.Run("auto on a missing dir starts fresh", func(t *testing.T) {
		st, err := Resolve(filepath.Join(t.TempDir(), "none"), ResumeAuto, false, nil)
		if st != nil || err != nil {
			t.Fatalf("got %v, %v", st, err)
		}
	})
	t.Run("auto picks the newest", func(t *testing.T) {
		dir := t.TempDir()
		for _, s := range []int64{3, 10, 7} {
			save(t, dir, testState(1, s), Options{Keep: -1})
		}
		st, err := Resolve(dir, "", false, nil)
		if err != nil || st.Step != 10 {
			t.Fatalf("got %v, %v", st, err)
		}
	})
	t.Run("auto with nothing valid fails", func(t *testing.T) {
		dir := t.TempDir()
		save(t, dir, testState(1, 1), Options{})
		os.Remove(filepath.Join(stepPath(dir, 1), ModelFile))
		_, err := Resolve(dir, ResumeAuto, false, nil)
		if err == nil || !strings.Contains(err.Error(), "none of its 1 checkpoints verifies") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("path that does not exist", func(t *testing.T) {
		_, err := Resolve(t.TempDir(), "/no/such/step-00000001", false, nil)
		if err == nil || !strings.Contains(err.Error(), "manifest.json: missing") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("never on an empty dir", func(t *testing.T) {
		st, err := Resolve(t.TempDir(), ResumeNever, false, nil)
		if st != nil || err != nil {
			t.Fatalf("got %v, %v", st, err)
		}
	})
	t.Run("never refuses a non-empty dir", func(t *testing.T) {
		dir := t.TempDir()
		save(t, dir, testState(1, 1), Options{})
		_, err := Resolve(dir, ResumeNever, false, nil)
		if err == nil || !strings.Contains(err.Error(), "--force") || !strings.Contains(err.Error(), "step-00000001") {
			t.Fatalf("err = %v", err)
		}
		if _, err := Load(stepPath(dir, 1)); err != nil {
			t.Fatal("the refused start damaged the old checkpoint:", err)
		}
	})
	t.Run("never with force deletes the old checkpoints", func(t *testing.T) {
		dir := t.TempDir()
		save(t, dir, testState(1, 1), Options{})
		os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("keep me"), 0o644)
		st, err := Resolve(dir, ResumeNever, true, nil)
		if st != nil || err != nil {
			t.Fatalf("got %v, %v", st, err)
		}
		if names := entries(t, dir); len(names) != 1 || names[0] != "notes.txt" {
			t.Fatalf("dir holds %v, want only notes.txt", names)
		}
	})
}

// rewrite replaces a file of a checkpoint and updates the manifest to match,
// so that only checks past the hashes can catch the change.
func rewrite(t *testing.T, path, name string, content []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(path, name), content, 0o644); err != nil {
		t.Fatal(err)
	}
	mb, err := os.ReadFile(filepath.Join(path, ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeManifest(mb)
	if err != nil {
		t.Fatal(err)
	}
	for i := range m.Files {
		if m.Files[i].Name == name {
			m.Files[i].Size, m.Files[i].SHA256 = int64(len(content)), sha(content)
		}
	}
	mb, _ = encodeManifest(m)
	if err := os.WriteFile(filepath.Join(path, ManifestFile), mb, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Files whose hashes match the manifest but whose contents are invalid.
func TestConsistentButInvalid(t *testing.T) {
	st := testState(2, 1)
	sf := func(ts []Tensor) []byte {
		var b bytes.Buffer
		if err := writeSafetensors(&b, ts, nil); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	other, _ := encodeState(testState(3, 1))
	tests := []struct {
		name    string
		file    string
		content []byte
		want    string
	}{
		{"two residual tensors", ResidualsFile, sf([]Tensor{{Name: "residuals", Shape: []int{1}, Data: []float32{1}}, {Name: "x", Shape: []int{1}, Data: []float32{1}}}), "want one 1-D tensor"},
		{"2-D residuals", ResidualsFile, sf([]Tensor{{Name: "residuals", Shape: []int{1, 1}, Data: []float32{1}}}), "want one 1-D tensor"},
		{"bf16 weights", ModelFile, rawSafetensors(`{"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}`, 4), ModelFile + `: header: tensor "a": dtype "BF16"`},
		{"state of another run", StateFile, other, `is run "run-3"`},
		{"state not json", StateFile, []byte("not json"), StateFile + ": invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			save(t, dir, st, Options{})
			rewrite(t, stepPath(dir, 1), tt.file, tt.content)
			_, err := Load(stepPath(dir, 1))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
