package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// Format is the version of the on-disk layout written by this package.
const Format = 1

// File names inside a checkpoint directory.
const (
	ModelFile     = "model.safetensors"
	OptimFile     = "optim.safetensors"
	ResidualsFile = "residuals.safetensors"
	StateFile     = "state.json"
	ManifestFile  = "manifest.json"
	// TokenizerFile is the copy of the run's tokenizer file (a Hugging
	// Face tokenizer.json) that a checkpoint of a run on a dataset with one
	// carries; built-in tokenizers (byte-level) have none.
	TokenizerFile = "tokenizer.json"
)

// maxTokenizerFile bounds tokenizer.json (a 131,072-token BPE is ~10 MB).
const maxTokenizerFile = 256 << 20

// maxStateFile bounds state.json and manifest.json: they hold configs and
// identities, never tensors.
const maxStateFile = 16 << 20

// State is everything needed to continue a run.
type State struct {
	Step   int64  // optimizer steps completed
	Seed   uint64 // the run seed
	Run    string // run identity; Save derives one from Seed when empty
	Cursor int64  // global samples consumed
	Epoch  int64  // passes over the dataset completed

	Schedule Schedule // LR-schedule position

	Model     []Tensor  // weights
	Optim     []Tensor  // optimizer state, e.g. "<param>.m" and "<param>.v"
	Residuals []float32 // allreduce error-feedback residuals; optional

	// ModelConfig is the architecture (model.Config as JSON) and ModelHash
	// its hash (model.Config.Hash()); a checkpoint only resumes a run whose
	// architecture matches.
	ModelConfig json.RawMessage
	ModelHash   string
	// Config is the full model and training configuration as a JSON object.
	// ConfigHash is set by Save and checked by Load (see HashConfig).
	Config     json.RawMessage
	ConfigHash string

	Tokenizer string // tokenizer identity
	// TokenizerJSON is the tokenizer file of a run whose dataset has one
	// (shard.Manifest.TokenizerFile), saved as TokenizerFile, and
	// TokenizerSHA256 its hex sha256 digest, recorded in state.json. A save
	// with a digest and no file records the digest alone (a node that
	// holds only the dataset manifest); Load then returns no file, and
	// readers fall back to the dataset's copy, checked against the digest.
	// The writer treats TokenizerJSON as read-only. Both are empty for
	// built-in tokenizers.
	TokenizerJSON   []byte
	TokenizerSHA256 string
	DatasetID       string // dataset identity
	Version         string // software version that wrote the checkpoint

	// Extra is caller-defined state stored verbatim (a JSON value, or empty).
	Extra json.RawMessage

	// Dir is the checkpoint directory a loaded State came from; not stored.
	Dir string
}

// Schedule is the position in the learning-rate schedule. It is kept apart
// from Step so that a resumed run may change its schedule.
type Schedule struct {
	Step int64   `json:"step"` // schedule steps taken
	LR   float64 `json:"lr"`   // the learning rate of the last step
}

// stateFile is state.json.
type stateFile struct {
	Format      int             `json:"format"`
	Run         string          `json:"run"`
	Step        int64           `json:"step"`
	Seed        uint64          `json:"seed"`
	Cursor      int64           `json:"cursor"`
	Epoch       int64           `json:"epoch"`
	Schedule    Schedule        `json:"schedule"`
	ModelHash   string          `json:"model_hash"`
	ModelConfig json.RawMessage `json:"model_config"`
	ConfigHash  string          `json:"config_hash"`
	Config      json.RawMessage `json:"config"`
	Tokenizer   string          `json:"tokenizer"`
	// TokenizerSHA256 is absent from checkpoints of built-in tokenizers
	// and from those written before checkpoints carried tokenizers.
	TokenizerSHA256 string          `json:"tokenizer_sha256,omitempty"`
	DatasetID       string          `json:"dataset"`
	Version         string          `json:"version"`
	Extra           json.RawMessage `json:"extra,omitempty"`
}

// HashConfig is the hash stored as ConfigHash: the first 16 hex digits of the
// sha256 of the compacted JSON.
func HashConfig(cfg json.RawMessage) (string, error) {
	var b bytes.Buffer
	if err := json.Compact(&b, cfg); err != nil {
		return "", fmt.Errorf("config is not valid JSON: %w", err)
	}
	s := sha256.Sum256(b.Bytes())
	return hex.EncodeToString(s[:8]), nil
}

// runID is the run identity used when the caller gives none.
func runID(seed uint64) string { return fmt.Sprintf("seed-%016x", seed) }

// check reports the first field of st that cannot be saved or was not loaded
// correctly.
func (st *State) check() error {
	switch {
	case st.Step < 0:
		return fmt.Errorf("step %d is negative", st.Step)
	case st.Cursor < 0:
		return fmt.Errorf("cursor %d is negative", st.Cursor)
	case st.Epoch < 0:
		return fmt.Errorf("epoch %d is negative", st.Epoch)
	case st.Schedule.Step < 0:
		return fmt.Errorf("schedule step %d is negative", st.Schedule.Step)
	case math.IsNaN(st.Schedule.LR) || math.IsInf(st.Schedule.LR, 0):
		return fmt.Errorf("schedule learning rate is %v", st.Schedule.LR)
	case st.ModelHash == "":
		return errors.New("model hash is empty")
	case st.TokenizerSHA256 != "" && !isSHA256(st.TokenizerSHA256):
		return fmt.Errorf("tokenizer sha256 %q is not 64 lower-case hex digits", st.TokenizerSHA256)
	case len(st.TokenizerJSON) > 0 && st.TokenizerSHA256 == "":
		return errors.New("a tokenizer file without its sha256")
	case len(st.TokenizerJSON) > maxTokenizerFile:
		return fmt.Errorf("tokenizer file of %d bytes, more than the %d allowed", len(st.TokenizerJSON), maxTokenizerFile)
	}
	for _, f := range []struct {
		name string
		v    json.RawMessage
	}{{"model config", st.ModelConfig}, {"config", st.Config}} {
		if !isObject(f.v) {
			return fmt.Errorf("%s is not a JSON object", f.name)
		}
	}
	if len(st.Extra) > 0 && !json.Valid(st.Extra) {
		return errors.New("extra state is not valid JSON")
	}
	for _, g := range []struct {
		name string
		ts   []Tensor
	}{{"model", st.Model}, {"optim", st.Optim}} {
		if err := checkTensors(g.ts); err != nil {
			return fmt.Errorf("%s tensors: %w", g.name, err)
		}
	}
	return nil
}

// compact returns b without insignificant space; b must be valid JSON.
func compact(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return b
	}
	return out.Bytes()
}

// isObject reports whether b is one JSON object.
func isObject(b json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(b, &m) == nil && m != nil
}

// encodeState returns state.json for st; st must have passed check.
func encodeState(st *State) ([]byte, error) {
	hash, err := HashConfig(st.Config)
	if err != nil {
		return nil, err
	}
	sf := stateFile{
		Format: Format, Run: st.Run, Step: st.Step, Seed: st.Seed, Cursor: st.Cursor, Epoch: st.Epoch,
		Schedule: st.Schedule, ModelHash: st.ModelHash, ModelConfig: st.ModelConfig,
		ConfigHash: hash, Config: st.Config, Tokenizer: st.Tokenizer, TokenizerSHA256: st.TokenizerSHA256,
		DatasetID: st.DatasetID, Version: st.Version, Extra: st.Extra,
	}
	if sf.Run == "" {
		sf.Run = runID(st.Seed)
	}
	b, err := json.MarshalIndent(sf, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// decodeState parses state.json strictly into a State without tensors.
func decodeState(b []byte) (*State, error) {
	if len(b) > maxStateFile {
		return nil, fmt.Errorf("%d bytes, more than the %d allowed", len(b), maxStateFile)
	}
	var sf stateFile
	if err := strictUnmarshal(b, &sf); err != nil {
		return nil, err
	}
	if sf.Format != Format {
		return nil, fmt.Errorf("format %d, this software reads format %d", sf.Format, Format)
	}
	if sf.Run == "" {
		return nil, errors.New("run identity is empty")
	}
	st := &State{
		Step: sf.Step, Seed: sf.Seed, Run: sf.Run, Cursor: sf.Cursor, Epoch: sf.Epoch,
		Schedule: sf.Schedule, ModelConfig: sf.ModelConfig, ModelHash: sf.ModelHash,
		Config: sf.Config, ConfigHash: sf.ConfigHash, Tokenizer: sf.Tokenizer,
		TokenizerSHA256: sf.TokenizerSHA256, DatasetID: sf.DatasetID, Version: sf.Version, Extra: sf.Extra,
	}
	if err := st.check(); err != nil {
		return nil, err
	}
	// state.json is indented; hand back the compact form that Save stored.
	st.ModelConfig, st.Config, st.Extra = compact(st.ModelConfig), compact(st.Config), compact(st.Extra)
	hash, err := HashConfig(st.Config)
	if err != nil {
		return nil, err
	}
	if hash != st.ConfigHash {
		return nil, fmt.Errorf("config_hash %q does not match the stored config (hash %q)", st.ConfigHash, hash)
	}
	return st, nil
}

// isSHA256 reports whether s is a sha256 digest in lower-case hex.
func isSHA256(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// strictUnmarshal decodes one JSON value into v, refusing unknown fields and
// trailing data.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	if _, err := dec.Token(); err == nil {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// residualsName is the tensor that holds State.Residuals in ResidualsFile.
const residualsName = "residuals"

// residualTensors is the content of ResidualsFile: one 1-D tensor, or none.
func residualTensors(r []float32) []Tensor {
	if len(r) == 0 {
		return nil
	}
	return []Tensor{{Name: residualsName, Shape: []int{len(r)}, Data: r}}
}

// Find returns the tensor of ts named name.
func Find(ts []Tensor, name string) (Tensor, bool) {
	for _, t := range ts {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}
