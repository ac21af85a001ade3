package checkpoint

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A real full filesystem: a 256 KiB tmpfs, when running as root.
func TestDiskFullTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=256k"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	first := testState(4, 1)
	save(t, dir, first, Options{})

	big := testState(4, 2)
	big.Residuals = make([]float32, 100_000)
	log, _ := newLog()
	w, err := NewWriter(dir, Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Save(big); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Close = %v, want ENOSPC", err)
	}
	if l := leftovers(t, dir); len(l) > 0 {
		t.Errorf("the failed save left %v", l)
	}
	got, err := Resolve(dir, ResumeAuto, false, log)
	if err != nil {
		t.Fatal(err)
	}
	equalStates(t, got, first)
}

// A FIFO in place of a file is reported, not opened (which would block).
func TestFIFOInCheckpoint(t *testing.T) {
	dir := t.TempDir()
	save(t, dir, testState(4, 1), Options{})
	f := filepath.Join(stepPath(dir, 1), ModelFile)
	os.Remove(f)
	if err := syscall.Mkfifo(f, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	_, err := Load(stepPath(dir, 1))
	if err == nil || !strings.Contains(err.Error(), ModelFile+": not a regular file") {
		t.Fatalf("err = %v", err)
	}
}
