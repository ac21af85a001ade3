package dataset

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/difftrain/difftrain/shard"
)

// PrepareOptions configure Prepare.
type PrepareOptions struct {
	Inputs []string // text, JSONL or Parquet files and directories of them
	Out    string   // output dataset directory
	// Format is "auto" (the default: by file name, see assignFormats),
	// "text" (each file is one document), "jsonl" (each non-blank line is
	// a JSON object whose Field holds one document; .gz and .zst files are
	// decompressed) or "parquet" (each row's Field is one document).
	Format string
	Field  string // JSONL field or Parquet column with the text (default "text")
	// TokensField, if set, is a Parquet column of already tokenized
	// documents (lists of integer ids < the tokenizer's Vocab) read instead
	// of Field.
	TokensField string
	SeqLen      int      // tokens per sequence (default 256)
	ValFraction float64  // share of documents held out as the "val" split
	ShardMB     float64  // target shard size in MiB (default 64)
	MaxMB       float64  // stop reading input after this many MiB (0: all)
	Ext         []string // in directories, keep only these extensions (e.g. ".go")
	SkipDirs    []string // in directories, skip directories with these names
	Workers     int      // tokenizer goroutines (default GOMAXPROCS)
	Tokenizer   Tokenizer
	// Progress, if set, is called with input bytes processed and the total.
	Progress func(done, total int64)
}

// PrepareStats report what Prepare did.
type PrepareStats struct {
	Files       int              // files read
	Binary      int              // files skipped as binary (directories only)
	Nulls       int64            // Parquet rows with a null text or token list, skipped
	Documents   map[string]int64 // per split
	InputBytes  int64            // bytes of text tokenized
	Tokens      int64            // tokens, including the EOS separators
	Sequences   map[string]int64 // per split
	Dropped     map[string]int64 // per split: tail tokens short of a sequence
	Manifest    *shard.Manifest
	MaxMBCapped bool // reading stopped at MaxMB
}

// Splits written by Prepare.
const (
	SplitTrain = "train"
	SplitVal   = "val"
)

var ownShardRE = regexp.MustCompile(`^(train|val)-[0-9]{5}\.arrow$`)

// doc is one tokenized document.
type doc struct {
	key  string
	toks []int32
	val  bool
}

// job is a unit of tokenizer work: one text file, a run of JSONL lines or
// a record batch of Parquet rows.
type job struct {
	file inputFile
	line int // number of the first line in data (JSONL)
	data []byte
	rows *rowBatch // Parquet
	read int64     // file bytes consumed for this job (progress)
	docs []doc
	err  error
	done chan struct{}
}

// bytes is the job's input size: text bytes, or 4 per pretokenized id.
func (j *job) bytes() int64 {
	if j.rows != nil && j.rows.ids != nil {
		return 4 * int64(len(j.rows.ids))
	}
	return int64(len(j.data))
}

// Prepare tokenizes the input documents in parallel, packs them in input
// order into sequences (gidd-spec.md §8.4), holds out a deterministic share
// of documents as the validation split, and writes shards of about ShardMB
// MiB and then the manifest. The output depends only on the input bytes and
// the options, not on timing or Workers. Shards are written through
// temporary files and renamed, and the manifest goes last, so an interrupted
// run leaves no dataset a reader would accept; running it again completes it.
func Prepare(ctx context.Context, o PrepareOptions) (*PrepareStats, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	files, err := listInputs(o.Inputs, o.Ext, o.SkipDirs)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	files = assignFormats(files, o.Format)
	if err := checkTokensField(files, o.TokensField); err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("prepare: no input files in %s", strings.Join(o.Inputs, ", "))
	}
	var total int64
	for _, f := range files {
		total += f.size
	}
	capBytes := int64(o.MaxMB * (1 << 20))
	if capBytes > 0 {
		total = min(total, capBytes)
	}
	if err := startOutput(o.Out); err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	meta := shard.Meta{SeqLen: o.SeqLen, Vocab: o.Tokenizer.Vocab(), Tokenizer: o.Tokenizer.Name()}
	perShard := max(1, int64(o.ShardMB*(1<<20))/int64(meta.SeqLen*meta.TokenBytes()))
	meta.BatchRows = int(min(perShard, int64(shard.DefaultBatchRows(meta.SeqLen, meta.TokenBytes()))))
	perShard = perShard / int64(meta.BatchRows) * int64(meta.BatchRows)

	st := &PrepareStats{Documents: map[string]int64{}, Sequences: map[string]int64{}, Dropped: map[string]int64{}}
	outs := map[string]*splitWriter{
		SplitTrain: {split: SplitTrain, dir: o.Out, meta: meta, per: perShard},
		SplitVal:   {split: SplitVal, dir: o.Out, meta: meta, per: perShard},
	}
	defer func() {
		for _, w := range outs {
			w.abort()
		}
	}()
	packs := map[string]*Packer{SplitTrain: NewPacker(o.SeqLen), SplitVal: NewPacker(o.SeqLen)}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	order, wait := o.pipeline(ctx, files, capBytes, st)

	var done, inBytes int64
	var collectErr error
	for j := range order {
		if collectErr != nil {
			continue // drain
		}
		select {
		case <-j.done:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			collectErr = ctx.Err()
			cancel()
			continue
		}
		if j.err != nil {
			collectErr = fmt.Errorf("prepare: %w", j.err)
			cancel()
			continue
		}
		for _, d := range j.docs {
			split := SplitTrain
			if d.val {
				split = SplitVal
			}
			st.Documents[split]++
			if err := packs[split].Add(d.toks, outs[split].add); err != nil {
				collectErr = fmt.Errorf("prepare: %w", err)
				cancel()
				break
			}
		}
		inBytes += j.bytes()
		done += j.read
		if capBytes > 0 {
			done = inBytes // the cap counts input bytes, not file bytes
		}
		if o.Progress != nil {
			o.Progress(min(done, total), total)
		}
	}
	if err := wait(); collectErr == nil {
		collectErr = err
	}
	if collectErr != nil {
		return nil, collectErr
	}
	st.InputBytes = inBytes
	for split, p := range packs {
		st.Dropped[split] = int64(p.Pending())
		st.Sequences[split] = outs[split].rows()
	}
	// Packed tokens, EOS separators included.
	st.Tokens = st.Sequences[SplitTrain]*int64(o.SeqLen) + st.Sequences[SplitVal]*int64(o.SeqLen) + st.Dropped[SplitTrain] + st.Dropped[SplitVal]
	if st.Documents[SplitTrain]+st.Documents[SplitVal] == 0 {
		return nil, fmt.Errorf("prepare: no documents in the input (%d files read, %d skipped as binary, all empty)", st.Files, st.Binary)
	}
	if st.Sequences[SplitTrain] == 0 {
		return nil, fmt.Errorf("prepare: the input's %d training tokens make no full sequence of %d tokens; give more text or a shorter --seq-len",
			st.Dropped[SplitTrain], o.SeqLen)
	}
	if o.ValFraction > 0 && st.Sequences[SplitVal] == 0 {
		slog.Warn("prepare: the validation split got no full sequence", "val_documents", st.Documents[SplitVal], "val_tokens", st.Dropped[SplitVal])
	}
	man := &shard.Manifest{Version: shard.Version, Tokenizer: meta.Tokenizer, Vocab: meta.Vocab, SeqLen: meta.SeqLen, Source: o.describe(st)}
	for _, split := range []string{SplitTrain, SplitVal} {
		infos, err := outs[split].finish()
		if err != nil {
			return nil, fmt.Errorf("prepare: %w", err)
		}
		man.Shards = append(man.Shards, infos...)
	}
	if err := writeTokenizerCopy(o.Out, o.Tokenizer, man); err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if err := shard.WriteManifest(o.Out, man); err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	removeStale(o.Out, man)
	st.Manifest = man
	return st, nil
}

// pipeline reads files in job-sized pieces (produce) and tokenizes them on
// o.Workers goroutines. Jobs come out of order in input order, each
// finished when its done channel closes; wait, called once order is
// drained, waits for the workers and returns the reader's error.
func (o *PrepareOptions) pipeline(ctx context.Context, files []inputFile, capBytes int64, st *PrepareStats) (<-chan *job, func() error) {
	work := make(chan *job, o.Workers*2)
	order := make(chan *job, o.Workers*4)
	var wg sync.WaitGroup
	for range o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				j.docs, j.err = o.tokenize(j)
				close(j.done)
			}
		}()
	}
	var prodErr error
	go func() {
		defer close(order)
		defer close(work)
		prodErr = o.produce(ctx, files, capBytes, st, work, order)
	}()
	return order, func() error { wg.Wait(); return prodErr }
}

func (o *PrepareOptions) defaults() error {
	if o.Tokenizer == nil {
		o.Tokenizer = Bytes{}
	}
	if o.Format == "" {
		o.Format = FormatAuto
	}
	if o.Field == "" {
		o.Field = "text"
	}
	if o.SeqLen == 0 {
		o.SeqLen = 256
	}
	if o.ShardMB == 0 {
		o.ShardMB = 64
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	switch {
	case len(o.Inputs) == 0:
		return errors.New("prepare: no input")
	case o.Out == "":
		return errors.New("prepare: no output directory")
	case o.Format != FormatAuto && o.Format != FormatText && o.Format != FormatJSONL && o.Format != FormatParquet:
		return fmt.Errorf("prepare: format %q: want auto, text, jsonl or parquet", o.Format)
	case o.SeqLen < 1 || o.SeqLen > 1<<20:
		return fmt.Errorf("prepare: sequence length %d out of range [1, %d]", o.SeqLen, 1<<20)
	case !(o.ValFraction >= 0 && o.ValFraction < 1):
		return fmt.Errorf("prepare: validation fraction %v: want [0, 1)", o.ValFraction)
	case !(o.ShardMB > 0) || math.IsInf(o.ShardMB, 0):
		return fmt.Errorf("prepare: shard size %v MiB: want > 0", o.ShardMB)
	case !(o.MaxMB >= 0) || math.IsInf(o.MaxMB, 0):
		return fmt.Errorf("prepare: input cap %v MiB: want >= 0", o.MaxMB)
	}
	return nil
}

// describe records the inputs and options in the manifest.
func (o *PrepareOptions) describe(st *PrepareStats) map[string]string {
	return map[string]string{
		"inputs":       strings.Join(o.Inputs, ","),
		"format":       o.Format,
		"field":        o.Field,
		"tokens_field": o.TokensField,
		"null_rows":    strconv.FormatInt(st.Nulls, 10),
		"val_fraction": strconv.FormatFloat(o.ValFraction, 'g', -1, 64),
		"max_mb":       strconv.FormatFloat(o.MaxMB, 'g', -1, 64),
		"files":        strconv.Itoa(st.Files),
		"documents":    strconv.FormatInt(st.Documents[SplitTrain]+st.Documents[SplitVal], 10),
		"input_bytes":  strconv.FormatInt(st.InputBytes, 10),
		"packing":      "gidd-spec 8.4: EOS after each document unless at a sequence boundary",
	}
}

// produce reads the input files in order and hands out jobs. Reading stops
// once capBytes (if > 0) of input have been handed out.
func (o *PrepareOptions) produce(ctx context.Context, files []inputFile, capBytes int64, st *PrepareStats, work, order chan<- *job) error {
	var used int64
	send := func(j *job) error {
		j.done = make(chan struct{})
		select {
		case order <- j:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case work <- j:
		case <-ctx.Done():
			return ctx.Err()
		}
		used += j.bytes()
		return nil
	}
	left := func() int64 {
		if capBytes <= 0 {
			return math.MaxInt64
		}
		return capBytes - used
	}
	for _, f := range files {
		if left() <= 0 {
			st.MaxMBCapped = true
			return nil
		}
		switch f.format {
		case FormatParquet:
			st.Files++
			if err := o.produceParquet(ctx, f, st, send, left); err != nil {
				return err
			}
		case FormatJSONL:
			st.Files++
			if err := o.produceJSONL(f, send, left, &st.MaxMBCapped); err != nil {
				return err
			}
		default:
			data, err := os.ReadFile(f.path)
			if err != nil {
				return fmt.Errorf("prepare: %w", err)
			}
			if !f.explicit && looksBinary(data) {
				st.Binary++
				continue
			}
			st.Files++
			if err := send(&job{file: f, data: data, read: int64(len(data))}); err != nil {
				return err
			}
		}
	}
	return nil
}

// cutLines returns the length of the whole lines of data that reach at
// least n bytes (the line containing byte n is included).
func cutLines(data []byte, n int) int {
	if n >= len(data) {
		return len(data)
	}
	if i := bytes.IndexByte(data[n:], '\n'); i >= 0 {
		return n + i + 1
	}
	return len(data)
}

// tokenize turns a job into documents.
func (o *PrepareOptions) tokenize(j *job) ([]doc, error) {
	switch {
	case j.rows != nil:
		return o.tokenizeRows(j)
	case j.file.format == FormatJSONL:
		return o.tokenizeJSONL(j)
	case len(j.data) == 0:
		return nil, nil
	}
	return []doc{o.newDoc(j.file, j.file.key, j.data)}, nil
}

// tokenizeJSONL turns a run of JSONL lines into documents.
func (o *PrepareOptions) tokenizeJSONL(j *job) ([]doc, error) {
	var docs []doc
	data, line := j.data, j.line
	for len(data) > 0 {
		l := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			l, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		n := line
		line++
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(l, &obj); err != nil {
			return nil, fmt.Errorf("%s:%d: not a JSON object: %v", j.file.path, n, err)
		}
		raw, ok := obj[o.Field]
		if !ok {
			return nil, fmt.Errorf("%s:%d: no field %q", j.file.path, n, o.Field)
		}
		var text string
		if err := json.Unmarshal(raw, &text); err != nil {
			return nil, fmt.Errorf("%s:%d: field %q is not a string", j.file.path, n, o.Field)
		}
		if text == "" {
			continue
		}
		docs = append(docs, o.newDoc(j.file, j.file.key+":"+strconv.Itoa(n), []byte(text)))
	}
	return docs, nil
}

// tokenizeRows turns a batch of Parquet rows into documents; empty and
// null rows give none.
func (o *PrepareOptions) tokenizeRows(j *job) ([]doc, error) {
	b := j.rows
	var docs []doc
	for i := range b.len() {
		s, e := b.off[i], b.off[i+1]
		if s == e {
			continue
		}
		key := b.rowKey(j.file.key, i)
		if b.ids != nil {
			docs = append(docs, doc{key: key, toks: b.ids[s:e], val: o.isVal(j.file, key)})
			continue
		}
		docs = append(docs, o.newDoc(j.file, key, b.data[s:e]))
	}
	return docs, nil
}

func (o *PrepareOptions) newDoc(f inputFile, key string, text []byte) doc {
	return doc{key: key, toks: o.Tokenizer.Encode(nil, text), val: o.isVal(f, key)}
}

// isVal decides a document's split: its file's, if the file has one, else
// by its key.
func (o *PrepareOptions) isVal(f inputFile, key string) bool {
	if f.split != "" {
		return f.split == SplitVal
	}
	return heldOut(key, o.ValFraction)
}

// heldOut decides, from a document's stable key alone, whether it belongs to
// the validation split.
func heldOut(key string, frac float64) bool {
	if frac <= 0 {
		return false
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	return float64(mix(h.Sum64())>>11)/(1<<53) < frac
}

// splitWriter writes the shards of one split.
type splitWriter struct {
	split string
	dir   string
	meta  shard.Meta
	per   int64 // sequences per shard
	w     *shard.Writer
	infos []shard.Info
	n     int64
}

func (s *splitWriter) add(seq []int32) error {
	if s.w == nil {
		name := fmt.Sprintf("%s-%05d.arrow", s.split, len(s.infos))
		w, err := shard.Create(filepath.Join(s.dir, name), s.meta)
		if err != nil {
			return err
		}
		s.w = w
	}
	if err := s.w.Add(seq); err != nil {
		return err
	}
	s.n++
	if s.w.Len() == s.per {
		return s.close()
	}
	return nil
}

func (s *splitWriter) close() error {
	info, err := s.w.Close()
	s.w = nil
	if err != nil {
		return err
	}
	info.Split = s.split
	s.infos = append(s.infos, info)
	return nil
}

func (s *splitWriter) rows() int64 { return s.n }

func (s *splitWriter) finish() ([]shard.Info, error) {
	if s.w != nil {
		if err := s.close(); err != nil {
			return nil, err
		}
	}
	return s.infos, nil
}

func (s *splitWriter) abort() {
	if s.w != nil {
		s.w.Abort()
		s.w = nil
	}
}

// startOutput creates dir and invalidates any dataset in it: the old
// manifest goes first, so no reader pairs it with new shards, and temporary
// files of an interrupted run are removed.
func startOutput(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, shard.ManifestName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return nil
}

// removeStale deletes shards of an earlier run that the new manifest does
// not list.
func removeStale(dir string, m *shard.Manifest) {
	keep := map[string]bool{}
	for _, s := range m.Shards {
		keep[s.Name] = true
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if ownShardRE.MatchString(e.Name()) && !keep[e.Name()] {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
