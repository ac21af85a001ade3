package dataset

import (
	"fmt"
	"log/slog"
	"strings"
)

// Input formats of PrepareOptions.Format.
const (
	FormatAuto    = "auto"    // by file name: *.parquet, *.jsonl[.gz|.zst], else text
	FormatText    = "text"    // a file is a document
	FormatJSONL   = "jsonl"   // a line is a JSON object holding a document
	FormatParquet = "parquet" // a row is a document
)

func isParquet(name string) bool { return strings.HasSuffix(name, ".parquet") }

func isJSONL(name string) bool {
	for _, s := range []string{".jsonl", ".ndjson"} {
		for _, c := range []string{"", ".gz", ".zst"} {
			if strings.HasSuffix(name, s+c) {
				return true
			}
		}
	}
	return false
}

func formatOf(name string) string {
	switch {
	case isParquet(name):
		return FormatParquet
	case isJSONL(name):
		return FormatJSONL
	}
	return FormatText
}

// Hugging Face split names (as the datasets library recognizes them in
// file and directory names).
var hfSplits = map[string]string{
	"train": "train", "training": "train",
	"validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
	"test": "test", "testing": "test", "eval": "test", "evaluation": "test",
}

// hfSplit returns the split a dataset file's relative path names: a
// directory called like a split, or a file name starting with one followed
// by '-', '_' or '.' (data/train-00000-of-00002.parquet, test.jsonl.gz).
func hfSplit(key string) string {
	parts := strings.Split(key, "/")
	if len(parts) < 2 {
		return ""
	}
	parts = parts[1:] // the input directory's own name says nothing
	base := parts[len(parts)-1]
	if i := strings.IndexAny(base, "-_."); i > 0 {
		if s, ok := hfSplits[base[:i]]; ok {
			return s
		}
	}
	for _, d := range parts[:len(parts)-1] {
		if s, ok := hfSplits[d]; ok {
			return s
		}
	}
	return ""
}

// assignFormats sets each file's format and split and drops the files that
// are not read. With format auto a named file goes by its extension, and a
// directory holding Parquet files is read as a Parquet dataset (its other
// files, such as README.md, are left out), else one holding JSONL files as
// JSONL, else as text. With format parquet only *.parquet files are read
// from directories.
//
// In a directory of Parquet or JSONL files laid out as a Hugging Face
// dataset with a train split (data/train-*.parquet), the test split is not
// read, and if there is a validation split too, the train files' documents
// all go to train and the validation files' to val instead of holding out
// ValFraction of them.
func assignFormats(files []inputFile, format string) []inputFile {
	dirFormat := map[int]string{}
	for _, f := range files {
		if f.explicit || format != FormatAuto {
			continue
		}
		switch ff := formatOf(f.path); {
		case ff == FormatParquet:
			dirFormat[f.root] = ff
		case ff == FormatJSONL && dirFormat[f.root] != FormatParquet:
			dirFormat[f.root] = ff
		}
	}
	out := files[:0]
	for _, f := range files {
		switch {
		case format != FormatAuto:
			f.format = format
			if format == FormatParquet && !f.explicit && !isParquet(f.path) {
				continue
			}
		case f.explicit:
			f.format = formatOf(f.path)
		default:
			f.format = dirFormat[f.root]
			if f.format == "" {
				f.format = FormatText
			} else if formatOf(f.path) != f.format {
				continue
			}
		}
		out = append(out, f)
	}
	return assignSplits(out)
}

// checkTokensField refuses a tokens field for input that is not Parquet.
func checkTokensField(files []inputFile, field string) error {
	if field == "" {
		return nil
	}
	for _, f := range files {
		if f.format != FormatParquet {
			return fmt.Errorf("%s: --tokens-field %q reads Parquet columns, and this is %s input", f.path, field, f.format)
		}
	}
	return nil
}

// assignSplits applies the Hugging Face split layout, directory by
// directory (see assignFormats).
func assignSplits(files []inputFile) []inputFile {
	type count struct {
		dir                     string
		train, validation, test int
	}
	per := map[int]*count{}
	for _, f := range files {
		if f.explicit || f.format == FormatText {
			continue
		}
		c := per[f.root]
		if c == nil {
			c = &count{dir: strings.Split(f.key, "/")[0]}
			per[f.root] = c
		}
		switch hfSplit(f.key) {
		case "train":
			c.train++
		case "validation":
			c.validation++
		case "test":
			c.test++
		}
	}
	out := files[:0]
	for _, f := range files {
		c := per[f.root]
		if f.explicit || c == nil || c.train == 0 {
			out = append(out, f)
			continue
		}
		switch hfSplit(f.key) {
		case "test":
			continue
		case "train":
			if c.validation > 0 {
				f.split = SplitTrain
			}
		case "validation":
			if c.validation > 0 {
				f.split = SplitVal
			}
		}
		out = append(out, f)
	}
	for _, c := range per {
		if c.train > 0 && (c.validation > 0 || c.test > 0) {
			slog.Info("prepare: Hugging Face dataset splits", "dir", c.dir, "train_files", c.train,
				"validation_files", c.validation, "test_files_skipped", c.test,
				"val_from", map[bool]string{true: "validation files", false: "val-fraction"}[c.validation > 0])
		}
	}
	return out
}
