package dataset

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
)

// inputFile is one file of prepare's input.
type inputFile struct {
	path     string
	key      string // stable name: input base name + relative path
	size     int64
	explicit bool   // named on the command line (never skipped as binary)
	root     int    // index of the input it came from
	format   string // text, jsonl or parquet
	split    string // "" (documents held out by ValFraction), or a split all its documents go to
}

// listInputs expands files and directories into a sorted file list. In
// directories it skips hidden entries, non-regular files, directories named
// in skip, and, when ext is not empty, files whose extension is not in ext.
func listInputs(inputs, ext, skip []string) ([]inputFile, error) {
	var out []inputFile
	for ri, in := range inputs {
		st, err := os.Stat(in)
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", in, err)
		}
		if !st.IsDir() {
			if !st.Mode().IsRegular() {
				return nil, fmt.Errorf("input %s: not a regular file or directory", in)
			}
			out = append(out, inputFile{path: in, key: filepath.Base(in), size: st.Size(), explicit: true, root: ri})
			continue
		}
		base := filepath.Base(filepath.Clean(in))
		err = filepath.WalkDir(in, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return fmt.Errorf("input %s: %w", p, err)
			}
			name := d.Name()
			if p != in && strings.HasPrefix(name, ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.IsDir() {
				if p != in && slices.Contains(skip, name) {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() || (len(ext) > 0 && !hasExt(name, ext)) {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return fmt.Errorf("input %s: %w", p, err)
			}
			rel, err := filepath.Rel(in, p)
			if err != nil {
				return fmt.Errorf("input %s: %w", p, err)
			}
			out = append(out, inputFile{path: p, key: base + "/" + filepath.ToSlash(rel), size: info.Size(), root: ri})
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// hasExt reports whether name ends in one of the extensions in ext (which
// may have several dots, as .jsonl.gz).
func hasExt(name string, ext []string) bool {
	for _, e := range ext {
		if filepath.Ext(name) == e || (strings.HasPrefix(e, ".") && strings.HasSuffix(name, e)) {
			return true
		}
	}
	return false
}

// looksBinary reports whether data has a NUL byte in its first 8000 bytes,
// the test git uses.
func looksBinary(data []byte) bool {
	return bytes.IndexByte(data[:min(len(data), 8000)], 0) >= 0
}

// DefaultCorpus returns the source tree of the installed Go toolchain
// (`go env GOROOT`/src) and the filters that select its ~88 MB of Go source:
// *.go files outside testdata directories.
func DefaultCorpus() (dir string, ext, skip []string, err error) {
	root := ""
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		root = strings.TrimSpace(string(out))
	}
	if root == "" {
		root = runtime.GOROOT() // the toolchain this binary was built with
	}
	if root == "" {
		return "", nil, nil, fmt.Errorf("default corpus: cannot find GOROOT (no go command on PATH); pass --input")
	}
	dir = filepath.Join(root, "src")
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", nil, nil, fmt.Errorf("default corpus: %s is not a directory; pass --input", dir)
	}
	return dir, []string{".go"}, []string{"testdata"}, nil
}
