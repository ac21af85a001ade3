package checkpoint

import (
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fullFile fails with ENOSPC once limit bytes were written, or on Sync.
type fullFile struct {
	file
	left     int
	syncFail bool
}

func (f *fullFile) Write(p []byte) (int, error) {
	if len(p) <= f.left {
		f.left -= len(p)
		return f.file.Write(p)
	}
	n, _ := f.file.Write(p[:f.left])
	f.left = 0
	return n, syscall.ENOSPC
}

func (f *fullFile) Sync() error {
	if f.syncFail {
		return syscall.EIO
	}
	return f.file.Sync()
}

func TestDiskFull(t *testing.T) {
	tests := []struct {
		name     string
		file     string // the file that fails
		limit    int    // bytes it accepts
		syncFail bool
		want     error
	}{
		{"mid weights", ModelFile, 5000, false, syscall.ENOSPC},
		{"in the header", OptimFile, 3, false, syscall.ENOSPC},
		{"state file", StateFile, 10, false, syscall.ENOSPC},
		{"manifest", ManifestFile, 0, false, syscall.ENOSPC},
		{"fsync", ResidualsFile, 1 << 30, true, syscall.EIO},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			first := testState(3, 1)
			save(t, dir, first, Options{})

			full := true
			opt := Options{create: func(p string) (file, error) {
				f, err := createFile(p)
				if err != nil || !full || filepath.Base(p) != tt.file {
					return f, err
				}
				return &fullFile{file: f, left: tt.limit, syncFail: tt.syncFail}, nil
			}}
			log, _ := newLog()
			opt.Logger = log
			w, err := NewWriter(dir, opt)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Save(testState(3, 2)); err != nil {
				t.Fatal(err)
			}
			err = w.Wait()
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.file) {
				t.Fatalf("Wait = %v, want %v naming %s", err, tt.want, tt.file)
			}
			if !errors.Is(w.LastError(), tt.want) {
				t.Errorf("LastError = %v", w.LastError())
			}
			if l := leftovers(t, dir); len(l) > 0 {
				t.Errorf("the failed save left %v", l)
			}
			got, err := Resolve(dir, ResumeAuto, false, log)
			if err != nil {
				t.Fatal(err)
			}
			equalStates(t, got, first)

			// Space is back: the next save succeeds and clears the error.
			full = false
			if err := w.Save(testState(3, 3)); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatalf("save after the disk recovered: %v", err)
			}
			if w.LastError() != nil {
				t.Errorf("LastError = %v after a good save", w.LastError())
			}
		})
	}
}
