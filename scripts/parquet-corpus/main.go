// Command parquet-corpus writes the default corpus (the Go standard library
// source that `trainer prepare` reads without --input) as one Parquet file
// and one JSONL file, a document per source file in prepare's order, for
// comparing prepare's throughput on the three forms.
//
//	go run ./scripts/parquet-corpus -out /tmp/corpus
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/difftrain/difftrain/dataset"
)

func main() {
	out := flag.String("out", "corpus", "output directory: corpus.parquet and corpus.jsonl")
	rg := flag.Int("row-group", 1000, "rows per Parquet row group")
	flag.Parse()
	if err := run(*out, *rg); err != nil {
		slog.Error("parquet-corpus", "err", err)
		os.Exit(1)
	}
}

func run(out string, rgRows int) error {
	dir, ext, skip, err := dataset.DefaultCorpus()
	if err != nil {
		return err
	}
	var paths []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && (slices.Contains(skip, d.Name()) || strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() && slices.Contains(ext, filepath.Ext(p)) && !strings.HasPrefix(d.Name(), ".") {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk %s: %w", dir, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	pf, err := os.Create(filepath.Join(out, "corpus.parquet"))
	if err != nil {
		return err
	}
	defer pf.Close()
	jf, err := os.Create(filepath.Join(out, "corpus.jsonl"))
	if err != nil {
		return err
	}
	defer jf.Close()
	jw := bufio.NewWriter(jf)
	schema := arrow.NewSchema([]arrow.Field{{Name: "path", Type: arrow.BinaryTypes.String}, {Name: "text", Type: arrow.BinaryTypes.String}}, nil)
	props := parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Snappy), parquet.WithMaxRowGroupLength(int64(rgRows)))
	w, err := pqarrow.NewFileWriter(schema, pf, props, pqarrow.DefaultWriterProps())
	if err != nil {
		return err
	}
	var total int64
	for start := 0; start < len(paths); start += rgRows {
		b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
		for _, p := range paths[start:min(len(paths), start+rgRows)] {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			b.Field(0).(*array.StringBuilder).Append(rel)
			b.Field(1).(*array.StringBuilder).Append(string(data))
			line, err := json.Marshal(map[string]string{"path": rel, "text": string(data)})
			if err != nil {
				return err
			}
			jw.Write(append(line, '\n'))
			total += int64(len(data))
		}
		rec := b.NewRecordBatch()
		err := w.Write(rec)
		rec.Release()
		b.Release()
		if err != nil {
			return fmt.Errorf("write parquet: %w", err)
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("close parquet: %w", err)
	}
	if err := jw.Flush(); err != nil {
		return err
	}
	fmt.Printf("%d files, %.1f MB of text -> %s/corpus.parquet and corpus.jsonl\n", len(paths), float64(total)/1e6, out)
	return nil
}
