package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// The tests that run the trainer as separate processes share one build of
// it, made on first use and removed when the tests end.
var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// trainerBin returns the path of the trainer built from this checkout.
func trainerBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "trainer-test-"); buildErr != nil {
			return
		}
		repo, _ := filepath.Abs("../..")
		builtBin = filepath.Join(buildDir, "trainer")
		build := exec.Command("go", "build", "-o", builtBin, "./cmd/trainer")
		build.Dir = repo
		if out, err := build.CombinedOutput(); err != nil {
			buildErr = &buildError{err, out}
		}
	})
	if buildErr != nil {
		t.Fatalf("build the trainer: %v", buildErr)
	}
	return builtBin
}

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + string(e.out) }
