package checkpoint

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/difftrain/difftrain/tokenizer"
)

// Export file names.
const (
	ExportWeights = "model.safetensors"
	ExportConfig  = "config.json"
)

// noiseKeys are the training-config fields copied into an exported
// config.json (looked up at any depth of the stored config): the noise type
// ("noise": a preset name or the mixing shift, as train.Config stores it),
// the explicit mixing parameters and the log-SNR range.
var noiseKeys = []string{"noise", "noise_type", "hybrid_mixing_scale", "hybrid_mixing_shift",
	"min_log_snr", "max_log_snr", "uniform_noise_includes_mask"}

// noisePresets are the noise types of gidd-spec §1.3 by name: the mixing
// shift, with scale 1.
var noisePresets = map[string]float64{"masked": -1000, "low-uniform": -2, "balanced": 0, "high-uniform": 2, "uniform": 1000}

// Export verifies the checkpoint at src and writes its weights to
// out/model.safetensors and a config.json that describes the architecture
// (the stored model config, derived sizes and the noise type) for loading
// from Python, and the tokenizer files if the checkpoint carries a
// tokenizer (see ExportWith). Existing files are replaced only with force.
func Export(src, out string, force bool) error {
	_, err := ExportWith(src, out, ExportOptions{Force: force})
	return err
}

// ExportOptions configure ExportWith.
type ExportOptions struct {
	// Force replaces existing files in the output directory.
	Force bool
	// Tokenizer is a tokenizer file to export for a checkpoint that
	// carries none (written before checkpoints carried tokenizers, or by a
	// node that held only the dataset's manifest), e.g. the dataset's copy.
	// It must be the checkpoint's: its sha256 equal to the recorded one,
	// or, for an older checkpoint, its name to the recorded tokenizer name.
	Tokenizer []byte
}

// ExportWith is Export with options. It returns the names of the files it
// wrote: model.safetensors and config.json, and for a checkpoint of a
// Hugging Face tokenizer, tokenizer.json (byte for byte the file the run
// was trained with), tokenizer_config.json and special_tokens_map.json
// (BOS, EOS, PAD and MASK: ids 0-3), so that the directory loads with
// Hugging Face's AutoTokenizer.
func ExportWith(src, out string, opt ExportOptions) ([]string, error) {
	st, err := Load(src)
	if err != nil {
		return nil, err
	}
	cfg, err := exportConfig(st)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", src, err)
	}
	tokFiles, err := exportTokenizer(st, opt.Tokenizer)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", src, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	names := []string{ExportWeights, ExportConfig}
	for _, f := range tokFiles {
		names = append(names, f.name)
	}
	if !opt.Force {
		for _, name := range names {
			if _, err := os.Stat(filepath.Join(out, name)); err == nil {
				return nil, fmt.Errorf("export: %s already exists (use --force to replace it)", filepath.Join(out, name))
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("export: %w", err)
			}
		}
	}
	meta := map[string]string{"format": "pt", "step": fmt.Sprint(st.Step), "model_hash": st.ModelHash}
	if err := writeAtomic(filepath.Join(out, ExportWeights), func(w io.Writer) error {
		return writeSafetensors(w, st.Model, meta)
	}); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	for _, f := range append([]namedFile{{ExportConfig, cfg}}, tokFiles...) {
		if err := writeAtomic(filepath.Join(out, f.name), func(w io.Writer) error {
			_, err := w.Write(f.data)
			return err
		}); err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
	}
	return names, nil
}

// Exported tokenizer files besides TokenizerFile.
const (
	ExportTokenizerConfig = "tokenizer_config.json"
	ExportSpecialTokens   = "special_tokens_map.json"
)

type namedFile struct {
	name string
	data []byte
}

// exportTokenizer returns the tokenizer files of st: none for a built-in
// tokenizer, else tokenizer.json (the checkpoint's copy, or fallback when
// it carries none), tokenizer_config.json and special_tokens_map.json.
func exportTokenizer(st *State, fallback []byte) ([]namedFile, error) {
	file := st.TokenizerJSON
	if len(file) == 0 && len(fallback) > 0 {
		file = fallback
		if st.TokenizerSHA256 != "" && sha(file) != st.TokenizerSHA256 {
			return nil, fmt.Errorf("the tokenizer file given has sha256 %s, the checkpoint was trained with the tokenizer of sha256 %s", sha(file), st.TokenizerSHA256)
		}
	}
	if len(file) == 0 {
		if st.TokenizerSHA256 != "" || strings.HasPrefix(st.Tokenizer, tokenizer.NamePrefix) {
			return nil, fmt.Errorf("the checkpoint was trained with tokenizer %s (sha256 %s) but carries no %s; give the dataset's copy (trainer export --tokenizer)",
				st.Tokenizer, cmp.Or(st.TokenizerSHA256, "not recorded"), TokenizerFile)
		}
		return nil, nil // a built-in tokenizer: config.json names it
	}
	t, err := tokenizer.Parse(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", TokenizerFile, err)
	}
	if t.Name() != st.Tokenizer {
		return nil, fmt.Errorf("%s is tokenizer %s, the checkpoint was trained with %s", TokenizerFile, t.Name(), st.Tokenizer)
	}
	special := map[string]string{}
	for id, key := range []string{"bos_token", "eos_token", "pad_token", "mask_token"} {
		if !t.Special(int32(id)) {
			return nil, fmt.Errorf("%s: id %d is %q, not a special token (ids 0-3 must be BOS, EOS, PAD, MASK)", TokenizerFile, id, t.Token(int32(id)))
		}
		special[key] = t.Token(int32(id))
	}
	conf := map[string]any{
		"tokenizer_class":              "PreTrainedTokenizerFast",
		"clean_up_tokenization_spaces": false,
	}
	for k, v := range special {
		conf[k] = v
	}
	if mc, err := decodeObject(st.ModelConfig); err == nil {
		if n, ok := number(mc["max_seq_len"]); ok && n > 0 {
			conf["model_max_length"] = int(n)
		}
	}
	files := []namedFile{{TokenizerFile, file}}
	for _, f := range []struct {
		name string
		v    any
	}{{ExportTokenizerConfig, conf}, {ExportSpecialTokens, special}} {
		// Token strings such as <|mask|> are written as they are, not
		// HTML-escaped.
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(f.v); err != nil {
			return nil, err
		}
		files = append(files, namedFile{f.name, b.Bytes()})
	}
	return files, nil
}

// exportConfig builds config.json: the model config fields as stored, the
// derived head_dim and intermediate_size, the noise fields of the training
// config, and the checkpoint's identity under "difftrain".
func exportConfig(st *State) ([]byte, error) {
	c, err := decodeObject(st.ModelConfig)
	if err != nil {
		return nil, fmt.Errorf("model config: %w", err)
	}
	c["architectures"] = []string{"GiddForDiffusionLM"}
	c["model_type"] = "gidd"
	c["torch_dtype"] = "float32"
	// The special ids every difftrain tokenizer keeps (gidd-spec.md §8.1).
	c["bos_token_id"], c["eos_token_id"], c["pad_token_id"] = 0, 1, 2
	dim, okD := number(c["hidden_size"])
	heads, okH := number(c["num_heads"])
	if okD && okH && heads > 0 {
		c["head_dim"] = dim / heads
	}
	if mult, ok := number(c["mlp_multiplier"]); ok && okD {
		c["intermediate_size"] = mult * dim
	}
	train, err := decodeObject(st.Config)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	for _, k := range noiseKeys {
		if v, ok := findKey(train, k, 4); ok {
			c[k] = v
		}
	}
	deriveNoise(c)
	c["difftrain"] = map[string]any{
		"step": st.Step, "run": st.Run, "seed": st.Seed, "model_hash": st.ModelHash,
		"config_hash": st.ConfigHash, "tokenizer": st.Tokenizer, "dataset": st.DatasetID,
		"tokenizer_sha256": st.TokenizerSHA256,
		"version":          st.Version, "training_config": train,
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// decodeObject decodes a JSON object, keeping numbers exact.
func decodeObject(b json.RawMessage) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errors.New("not a JSON object")
	}
	return m, nil
}

// number returns a decoded JSON number (or a float64) as a float64.
func number(v any) (float64, bool) {
	switch v := v.(type) {
	case float64:
		return v, true
	case json.Number:
		f, err := v.Float64()
		return f, err == nil
	}
	return 0, false
}

// findKey looks key up in m and its nested objects (depth levels at most),
// visiting keys in sorted order.
func findKey(m map[string]any, key string, depth int) (any, bool) {
	if v, ok := m[key]; ok {
		return v, true
	}
	if depth == 0 {
		return nil, false
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if sub, ok := m[k].(map[string]any); ok {
			if v, ok := findKey(sub, key, depth-1); ok {
				return v, true
			}
		}
	}
	return nil, false
}

// deriveNoise completes noise_type, hybrid_mixing_shift and
// hybrid_mixing_scale in c from whichever of them, or "noise", is present.
func deriveNoise(c map[string]any) {
	if kind, ok := c["noise"].(string); ok {
		kind = strings.ToLower(strings.TrimSpace(kind))
		shift, ok := noisePresets[kind]
		if !ok {
			if f, err := strconv.ParseFloat(kind, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
				shift, ok = f, true
			}
		}
		if _, set := c["hybrid_mixing_shift"]; ok && !set {
			c["hybrid_mixing_shift"] = shift
		}
		if _, set := c["noise_type"]; !ok && !set {
			c["noise_type"] = kind // not a type this package knows: kept as given
		}
		delete(c, "noise")
	}
	shift, ok := number(c["hybrid_mixing_shift"])
	if !ok {
		return
	}
	if _, set := c["noise_type"]; !set {
		c["noise_type"] = noiseLabel(shift)
	}
	if _, set := c["hybrid_mixing_scale"]; !set {
		c["hybrid_mixing_scale"] = 1 // the paper's noise types all use scale 1
	}
}

// noiseLabel names a hybrid-mixing shift as gidd-spec §1.3 does.
func noiseLabel(shift float64) string {
	switch {
	case shift <= -1000:
		return "masked"
	case shift >= 1000:
		return "uniform"
	}
	for name, b := range noisePresets {
		if b == shift {
			return name
		}
	}
	return "hybrid"
}

// writeAtomic writes path through a temporary file in the same directory,
// fsynced and renamed into place.
func writeAtomic(path string, fill func(io.Writer) error) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+strings.TrimPrefix(filepath.Base(path), ".")+".tmp-*")
	if err != nil {
		return err
	}
	err = fill(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return syncDir(dir)
}
