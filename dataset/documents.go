package dataset

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/difftrain/difftrain/tokenizer"
)

// textSink is a Tokenizer that hands the text to a function and makes no
// tokens: Documents runs Prepare's readers with it.
type textSink func([]byte)

func (textSink) Name() string                              { return "text" }
func (textSink) Vocab() int                                { return BytesVocab }
func (s textSink) Encode(dst []int32, text []byte) []int32 { s(text); return dst }
func (textSink) Decode(dst []byte, _ []int32) []byte       { return dst }

// Documents calls fn with the text of each document Prepare would read
// from o's inputs (Inputs, Format, Field, Ext, SkipDirs, MaxMB), from
// o.Workers goroutines at once, in no fixed order. It writes nothing.
func Documents(ctx context.Context, o PrepareOptions, fn func(text []byte)) error {
	o.Tokenizer = textSink(fn)
	if o.Out == "" {
		o.Out = "unused" // defaults wants one; nothing is written
	}
	if err := o.defaults(); err != nil {
		return err
	}
	files, err := listInputs(o.Inputs, o.Ext, o.SkipDirs)
	if err != nil {
		return fmt.Errorf("documents: %w", err)
	}
	files = assignFormats(files, o.Format)
	if len(files) == 0 {
		return fmt.Errorf("documents: no input files in %v", o.Inputs)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st := &PrepareStats{Documents: map[string]int64{}, Sequences: map[string]int64{}, Dropped: map[string]int64{}}
	order, wait := o.pipeline(ctx, files, int64(o.MaxMB*(1<<20)), st)
	var first error
	for j := range order {
		select {
		case <-j.done:
		case <-ctx.Done():
			if first == nil {
				first = ctx.Err()
			}
			continue
		}
		if j.err != nil && first == nil {
			first = fmt.Errorf("documents: %w", j.err)
			cancel()
		}
	}
	if err := wait(); first == nil {
		first = err
	}
	return first
}

// TrainTokenizer trains a byte-level BPE in the gidd-spec.md §8.1 layout on
// the documents Prepare would read from o, and returns its tokenizer.json.
func TrainTokenizer(ctx context.Context, o PrepareOptions, to tokenizer.TrainOptions) ([]byte, error) {
	tr, err := tokenizer.NewTrainer(to)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	var mu sync.Mutex
	var bytes, docs int64
	err = Documents(ctx, o, func(text []byte) {
		tr.Add(text)
		mu.Lock()
		bytes += int64(len(text))
		docs++
		mu.Unlock()
	})
	if err != nil {
		return nil, fmt.Errorf("tokenizer train: %w", err)
	}
	if docs == 0 {
		return nil, fmt.Errorf("tokenizer train: no documents in %v", o.Inputs)
	}
	kept, dropped := tr.Words()
	slog.Info("tokenizer train: counted words", "documents", docs, "bytes", bytes, "words", kept,
		"words_dropped", dropped, "seconds", time.Since(start).Seconds())
	out, err := tr.Finish()
	if err != nil {
		return nil, err
	}
	slog.Info("tokenizer train: merged", "seconds", time.Since(start).Seconds())
	return out, nil
}
