package dataset

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/shard"
)

// corpus writes a small tree of text files, one of them not UTF-8, and
// returns its root and the documents in the order prepare reads them.
func corpus(t *testing.T) (string, map[string][]byte) {
	t.Helper()
	return corpusAt(t, filepath.Join(t.TempDir(), "corpus"))
}

func corpusAt(t *testing.T, root string) (string, map[string][]byte) {
	t.Helper()
	docs := map[string][]byte{}
	add := func(rel string, data []byte) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		docs["corpus/"+filepath.ToSlash(rel)] = data
	}
	for i := range 40 {
		var b strings.Builder
		for j := range 5 + i*13%50 {
			fmt.Fprintf(&b, "document %d line %d: the quick brown fox jumps over the lazy dog\n", i, j)
		}
		add(fmt.Sprintf("d%d/f%02d.txt", i%3, i), []byte(b.String()))
	}
	add("latin1.txt", []byte{'c', 'a', 'f', 0xe9, ' ', 0xff, 0xfe, '\n'}) // not UTF-8: bytes pass through
	add("exact.txt", bytes.Repeat([]byte("x"), 64))
	return root, docs
}

func readSplit(t *testing.T, dir, split string) [][]int32 {
	t.Helper()
	m, err := shard.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	var seqs [][]int32
	for _, s := range m.Split(split) {
		r, err := shard.Open(filepath.Join(dir, s.Name), m.Expect(s))
		if err != nil {
			t.Fatal(err)
		}
		for i := range r.Len() {
			dst := make([]int32, m.SeqLen)
			if err := r.Read(i, dst); err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, dst)
		}
		r.Close()
	}
	return seqs
}

func TestPrepareRoundTrip(t *testing.T) {
	root, docs := corpus(t)
	out := t.TempDir()
	const n = 64
	st, err := Prepare(context.Background(), PrepareOptions{Inputs: []string{root}, Out: out, SeqLen: n, ValFraction: 0.2, ShardMB: 0.01, Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Manifest.Split(SplitTrain)) < 2 || st.Sequences[SplitVal] == 0 {
		t.Fatalf("want several train shards and a val split: %+v", st.Manifest.Shards)
	}
	// Rebuild the expected token streams from the documents in walk order.
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	slices.Sort(keys) // WalkDir order is lexical
	for _, split := range []string{SplitTrain, SplitVal} {
		p := NewPacker(n)
		var want [][]int32
		for _, k := range keys {
			if heldOut(k, 0.2) != (split == SplitVal) {
				continue
			}
			p.Add(Bytes{}.Encode(nil, docs[k]), func(s []int32) error { want = append(want, slices.Clone(s)); return nil })
		}
		got := readSplit(t, out, split)
		if !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("%s: %d sequences read back differ from the %d packed", split, len(got), len(want))
		}
		if st.Dropped[split] >= n {
			t.Fatalf("%s: %d tokens dropped, a full sequence or more", split, st.Dropped[split])
		}
		if int64(len(got)) != st.Sequences[split] {
			t.Fatalf("%s: stats say %d sequences, read %d", split, st.Sequences[split], len(got))
		}
		// Splitting the decoded stream at EOS gives back the documents.
		var stream []int32
		for _, s := range got {
			stream = append(stream, s...)
		}
		// The tail short of a full sequence is dropped.
		text := Bytes{}.Decode(nil, stream)
		for _, k := range keys {
			if heldOut(k, 0.2) != (split == SplitVal) {
				continue
			}
			if !bytes.HasPrefix(text, docs[k]) {
				if bytes.HasPrefix(docs[k], text) {
					break // the dropped tail, fewer than n tokens
				}
				t.Fatalf("%s: document %s is not next in the decoded stream", split, k)
			}
			text = text[len(docs[k]):]
		}
	}
}

func TestPrepareDeterministic(t *testing.T) {
	root, _ := corpus(t)
	var first map[string][]byte
	for i, workers := range []int{1, 4, 2} {
		out := t.TempDir()
		if _, err := Prepare(context.Background(), PrepareOptions{Inputs: []string{root}, Out: out, SeqLen: 32, ValFraction: 0.1, ShardMB: 0.02, Workers: workers}); err != nil {
			t.Fatal(err)
		}
		files := map[string][]byte{}
		ents, _ := os.ReadDir(out)
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(out, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			files[e.Name()] = b
		}
		if i == 0 {
			first = files
			continue
		}
		if len(files) != len(first) {
			t.Fatalf("run %d wrote %d files, run 0 wrote %d", i, len(files), len(first))
		}
		for name, b := range first {
			if !bytes.Equal(files[name], b) {
				t.Fatalf("run %d (workers %d): %s differs", i, workers, name)
			}
		}
	}
}

// TestPrepareInterrupted cancels a run halfway: no manifest is left (so no
// reader accepts the directory), no temporary files remain, and a second
// run produces the same bytes as an uninterrupted one.
func TestPrepareInterrupted(t *testing.T) {
	root, _ := corpus(t)
	ref := t.TempDir()
	o := PrepareOptions{Inputs: []string{root}, Out: ref, SeqLen: 32, ShardMB: 0.01, Workers: 2}
	if _, err := Prepare(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	// An earlier, different dataset in the directory must not survive.
	o2 := o
	o2.Out, o2.SeqLen = out, 16
	if _, err := Prepare(context.Background(), o2); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	o3 := o
	o3.Out = out
	o3.Progress = func(done, total int64) {
		if done > total/2 {
			cancel()
		}
	}
	if _, err := Prepare(ctx, o3); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted prepare: %v, want context.Canceled", err)
	}
	if _, err := Open(context.Background(), Options{Dir: out}); err == nil {
		t.Fatal("a reader accepted an interrupted prepare's output")
	}
	ents, _ := os.ReadDir(out)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("temporary file %s left behind", e.Name())
		}
	}
	o3.Progress = nil
	if _, err := Prepare(context.Background(), o3); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadDir(ref)
	b, _ := os.ReadDir(out)
	if len(a) != len(b) {
		t.Fatalf("resumed run has %d files, reference %d", len(b), len(a))
	}
	for _, e := range a {
		x, _ := os.ReadFile(filepath.Join(ref, e.Name()))
		y, _ := os.ReadFile(filepath.Join(out, e.Name()))
		if !bytes.Equal(x, y) {
			t.Fatalf("%s differs after the resumed run", e.Name())
		}
	}
}

func TestPrepareJSONL(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "docs.jsonl")
	var b strings.Builder
	var texts []string
	for i := range 50 {
		s := fmt.Sprintf("jsonl document %d with \"quotes\", \\ and é\n%s", i, strings.Repeat("ab", i))
		texts = append(texts, s)
		fmt.Fprintf(&b, "{\"id\": %d, \"body\": %q}\n", i, s)
		if i == 10 {
			b.WriteString("\n") // blank lines are skipped
		}
	}
	if err := os.WriteFile(in, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if _, err := Prepare(context.Background(), PrepareOptions{Inputs: []string{in}, Out: out, Format: "jsonl", Field: "body", SeqLen: 16}); err != nil {
		t.Fatal(err)
	}
	p := NewPacker(16)
	var want [][]int32
	for _, s := range texts {
		p.Add(Bytes{}.Encode(nil, []byte(s)), func(s []int32) error { want = append(want, slices.Clone(s)); return nil })
	}
	if got := readSplit(t, out, SplitTrain); !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("jsonl: %d sequences, want %d, or contents differ", len(got), len(want))
	}
}

func TestPrepareMaxMB(t *testing.T) {
	dir := t.TempDir()
	for i := range 10 {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("%d.txt", i)), bytes.Repeat([]byte{'a' + byte(i)}, 100<<10), 0o644)
	}
	st, err := Prepare(context.Background(), PrepareOptions{Inputs: []string{dir}, Out: t.TempDir(), MaxMB: 0.25})
	if err != nil {
		t.Fatal(err)
	}
	if !st.MaxMBCapped || st.Files != 3 || st.InputBytes != 300<<10 {
		t.Fatalf("cap 0.25 MiB: capped %v, %d files, %d bytes; want 3 files of 100 KiB", st.MaxMBCapped, st.Files, st.InputBytes)
	}
}

func TestPrepareBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	emptyDir := filepath.Join(dir, "empty")
	os.MkdirAll(emptyDir, 0o755)
	emptyFiles := filepath.Dir(write("blank/a.txt", ""))
	write("blank/b.txt", "")
	short := write("short.txt", "tiny")
	nofield := write("nofield.jsonl", "{\"text\": \"ok\"}\n{\"other\": \"x\"}\n")
	notjson := write("notjson.jsonl", "{\"text\": \"ok\"}\nnot json\n")
	notstring := write("notstring.jsonl", "{\"text\": 5}\n")
	for _, tc := range []struct {
		name string
		o    PrepareOptions
		err  string
	}{
		{"no input", PrepareOptions{}, "no input"},
		{"missing input", PrepareOptions{Inputs: []string{filepath.Join(dir, "nope")}}, "no such file"},
		{"empty directory", PrepareOptions{Inputs: []string{emptyDir}}, "no input files"},
		{"empty files", PrepareOptions{Inputs: []string{emptyFiles}}, "no documents"},
		{"too short", PrepareOptions{Inputs: []string{short}}, "no full sequence of 256"},
		{"jsonl without the field", PrepareOptions{Inputs: []string{nofield}, Format: "jsonl"}, `nofield.jsonl:2: no field "text"`},
		{"jsonl not json", PrepareOptions{Inputs: []string{notjson}, Format: "jsonl"}, "notjson.jsonl:2: not a JSON object"},
		{"jsonl not a string", PrepareOptions{Inputs: []string{notstring}, Format: "jsonl"}, `notstring.jsonl:1: field "text" is not a string`},
		{"bad format", PrepareOptions{Inputs: []string{short}, Format: "csv"}, `format "csv"`},
		{"bad val fraction", PrepareOptions{Inputs: []string{short}, ValFraction: 1}, "validation fraction"},
		{"bad seq len", PrepareOptions{Inputs: []string{short}, SeqLen: -3}, "sequence length -3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Out = filepath.Join(t.TempDir(), "out")
			_, err := Prepare(context.Background(), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
			if _, err := os.Stat(filepath.Join(tc.o.Out, shard.ManifestName)); err == nil {
				t.Fatal("a failed prepare wrote a manifest")
			}
		})
	}
}
