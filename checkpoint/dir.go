package checkpoint

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Names in a checkpoint directory: complete checkpoints are step-NNNNNNNN;
// a save in progress is .tmp-step-NNNNNNNN-HOST-PID-RAND and a checkpoint
// being deleted is .trash-step-NNNNNNNN-HOST-PID-RAND.
const (
	stepPrefix  = "step-"
	tmpPrefix   = ".tmp-"
	trashPrefix = ".trash-"
)

// StepDir is the name of the directory of the checkpoint at step.
func StepDir(step int64) string { return fmt.Sprintf("%s%08d", stepPrefix, step) }

// parseStepDir returns the step of a directory named by StepDir.
func parseStepDir(name string) (int64, bool) {
	s, ok := strings.CutPrefix(name, stepPrefix)
	if !ok || len(s) < 8 {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || StepDir(n) != name {
		return 0, false
	}
	return n, true
}

// Info is one complete checkpoint in a directory.
type Info struct {
	Step int64
	Path string
}

// List returns the complete checkpoints in dir (those with a manifest),
// newest first, without verifying them. A missing dir holds none.
func List(dir string) ([]Info, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint dir: %w", err)
	}
	var out []Info
	for _, e := range ents {
		step, ok := parseStepDir(e.Name())
		if !ok || !e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(p, ManifestFile)); err != nil {
			continue
		}
		out = append(out, Info{Step: step, Path: p})
	}
	slices.SortFunc(out, func(a, b Info) int { return cmp.Compare(b.Step, a.Step) })
	return out, nil
}

// incomplete returns the step directories in dir that have no manifest:
// never made by a Writer, which renames a directory into place only with its
// manifest, so they were damaged or copied by hand.
func incomplete(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if _, ok := parseStepDir(e.Name()); !ok || !e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(p, ManifestFile)); errors.Is(err, fs.ErrNotExist) {
			out = append(out, p)
		}
	}
	return out
}

// owner is the host and process that name a temporary directory.
func owner() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "host"
	}
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' {
			return r
		}
		return '_'
	}, host)
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// active holds the temporary directories of the saves in flight in this
// process, which Clean must not remove.
var active sync.Map

// liveOwner reports whether the temporary directory name was made by another
// process of this host that still runs: a concurrent writer. A name with our
// own pid that is not in active comes from an earlier process that had the
// same pid (a restarted container's pid 1).
func liveOwner(name string) bool {
	parts := strings.Split(name, "-")
	if len(parts) < 4 {
		return false
	}
	host, pidStr := parts[len(parts)-3], parts[len(parts)-2]
	self := strings.Split(owner(), "-")
	pid, err := strconv.Atoi(pidStr)
	if err != nil || host != self[0] || pid == os.Getpid() {
		return false
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	err = p.Signal(syscall.Signal(0))
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Clean removes what crashed saves and deletions left in dir: temporary and
// trash directories, except those of another live writer on this host. It
// returns the names it removed.
func Clean(dir string, log *slog.Logger) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint dir: %w", err)
	}
	var removed []string
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, tmpPrefix) && !strings.HasPrefix(name, trashPrefix) {
			continue
		}
		if _, ours := active.Load(filepath.Join(dir, name)); ours || liveOwner(name) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return removed, fmt.Errorf("removing leftover %s: %w", name, err)
		}
		logger(log).Info("removed leftover of an interrupted checkpoint save", "path", filepath.Join(dir, name))
		removed = append(removed, name)
	}
	return removed, nil
}

// remove deletes a complete checkpoint: renamed out of sight first, so a
// crash half-way leaves trash for Clean, never a damaged step directory.
func remove(dir, name string) error {
	trash := filepath.Join(dir, trashPrefix+name+"-"+owner()+"-"+randHex())
	if err := os.Rename(filepath.Join(dir, name), trash); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	return os.RemoveAll(trash)
}

// syncDir fsyncs a directory so that renames in it are durable. File
// systems that cannot sync a directory (EINVAL, ENOTSUP: some FUSE and
// network file systems) are accepted as they are.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		err = nil
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// regular reports an error unless path is a regular file (opening a FIFO
// would block).
func regular(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("not a regular file (%v)", fi.Mode().Type())
	}
	return nil
}

// readSmall reads a file of at most maxStateFile bytes.
func readSmall(path string) ([]byte, error) {
	if err := regular(path); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxStateFile {
		return nil, fmt.Errorf("larger than %d bytes", maxStateFile)
	}
	return b, nil
}

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}
