package dataset

import (
	"slices"
	"testing"
)

func TestHFSplit(t *testing.T) {
	for key, want := range map[string]string{
		"ds/data/train-00000-of-00002.parquet":      "train",
		"ds/data/validation-00000-of-00001.parquet": "validation",
		"ds/data/test-00000-of-00001.parquet":       "test",
		"ds/plain_text/train/0000.parquet":          "train",
		"ds/dev.jsonl.gz":                           "validation",
		"ds/data/trainer.parquet":                   "",
		"ds/data/shard-0.parquet":                   "",
		"train.parquet":                             "", // a named file, not a dataset folder
		"train/x.parquet":                           "", // the input directory's own name
	} {
		if got := hfSplit(key); got != want {
			t.Errorf("hfSplit(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestAssignFormats(t *testing.T) {
	files := []inputFile{
		{path: "a.parquet", key: "a.parquet", explicit: true, root: 0},
		{path: "b.jsonl.zst", key: "b.jsonl.zst", explicit: true, root: 1},
		{path: "hf/README.md", key: "hf/README.md", root: 2},
		{path: "hf/data/test-0.parquet", key: "hf/data/test-0.parquet", root: 2},
		{path: "hf/data/train-0.parquet", key: "hf/data/train-0.parquet", root: 2},
		{path: "hf/data/validation-0.parquet", key: "hf/data/validation-0.parquet", root: 2},
		{path: "j/notes.txt", key: "j/notes.txt", root: 3},
		{path: "j/train.jsonl", key: "j/train.jsonl", root: 3},
		{path: "t/x.txt", key: "t/x.txt", root: 4},
		{path: "t/y.go", key: "t/y.go", root: 4},
	}
	type fs struct{ path, format, split string }
	got := func(format string) []fs {
		var out []fs
		for _, f := range assignFormats(slices.Clone(files), format) {
			out = append(out, fs{f.path, f.format, f.split})
		}
		return out
	}
	want := []fs{
		{"a.parquet", "parquet", ""},
		{"b.jsonl.zst", "jsonl", ""},
		{"hf/data/train-0.parquet", "parquet", "train"},
		{"hf/data/validation-0.parquet", "parquet", "val"},
		{"j/train.jsonl", "jsonl", ""}, // no validation split: --val-fraction holds out
		{"t/x.txt", "text", ""},
		{"t/y.go", "text", ""},
	}
	if g := got(FormatAuto); !slices.Equal(g, want) {
		t.Fatalf("auto:\n got %v\nwant %v", g, want)
	}
	// A format given applies to every file; from directories, format
	// parquet reads only *.parquet.
	for _, f := range got(FormatParquet) {
		if f.format != FormatParquet || (!isParquet(f.path) && f.path != "b.jsonl.zst") {
			t.Fatalf("format parquet kept %v", f)
		}
	}
	if g := got(FormatText); len(g) != len(files) || g[0].format != FormatText || g[3].split != "" {
		t.Fatalf("format text: %v; want every file as text, no splits", g)
	}
}
