package checkpoint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
)

// Current is what the starting run would save: the identities a checkpoint
// is checked against before it is resumed.
type Current struct {
	ModelConfig json.RawMessage // model.Config as JSON
	ModelHash   string          // model.Config.Hash()
	Config      json.RawMessage // full model and training config
	Tokenizer   string
	// TokenizerSHA256 is the sha256 of the dataset's tokenizer file
	// (shard.Manifest.TokenizerSHA256); empty for built-in tokenizers.
	TokenizerSHA256 string
	DatasetID       string
}

// Diff is one field that differs between two JSON objects; Path is dotted
// for nested objects, and Old and New are JSON ("absent" when missing).
type Diff struct {
	Path     string
	Old, New string
}

func (d Diff) String() string { return fmt.Sprintf("%s: %s → %s", d.Path, d.Old, d.New) }

// Compatible checks that st can continue the run described by cur. A
// different architecture or tokenizer is an error that lists what differs;
// changes of the training config (learning rate, step count, ...) and of the
// dataset are allowed and logged.
func (st *State) Compatible(cur Current, log *slog.Logger) error {
	log = logger(log)
	arch, err := DiffJSON(st.ModelConfig, cur.ModelConfig)
	if err != nil {
		return fmt.Errorf("comparing model configs: %w", err)
	}
	if len(arch) > 0 || st.ModelHash != cur.ModelHash {
		var parts []string
		for _, d := range arch {
			parts = append(parts, d.String())
		}
		if len(parts) == 0 {
			parts = append(parts, "the stored configs are equal, so the architecture code changed")
		}
		return fmt.Errorf("checkpoint %s has a different architecture (model hash %s, this run %s): %s",
			st.Dir, st.ModelHash, cur.ModelHash, strings.Join(parts, "; "))
	}
	if st.TokenizerSHA256 != "" && cur.TokenizerSHA256 != "" && st.TokenizerSHA256 != cur.TokenizerSHA256 {
		return fmt.Errorf("checkpoint %s was trained with the tokenizer file of sha256 %s, this run's dataset has a tokenizer of sha256 %s: token ids would mean other strings; prepare the data with the checkpoint's tokenizer (trainer export writes it)",
			st.Dir, st.TokenizerSHA256, cur.TokenizerSHA256)
	}
	if st.Tokenizer != cur.Tokenizer {
		return fmt.Errorf("checkpoint %s was trained with tokenizer %s, this run uses %s", st.Dir, describeTokenizer(st.Tokenizer, st.TokenizerSHA256), describeTokenizer(cur.Tokenizer, cur.TokenizerSHA256))
	}
	if st.DatasetID != cur.DatasetID {
		log.Warn("dataset changed since the checkpoint", "checkpoint", st.Dir, "was", st.DatasetID, "now", cur.DatasetID)
	}
	diffs, err := DiffJSON(st.Config, cur.Config)
	if err != nil {
		return fmt.Errorf("comparing configs: %w", err)
	}
	for _, d := range diffs {
		log.Info("config changed since the checkpoint", "field", d.Path, "was", d.Old, "now", d.New)
	}
	return nil
}

// describeTokenizer names a tokenizer by name and, if it has a file, the
// file's sha256.
func describeTokenizer(name, sum string) string {
	if sum == "" {
		return strconv.Quote(name)
	}
	return fmt.Sprintf("%q (file sha256 %s)", name, sum)
}

// DiffJSON compares two JSON objects field by field, descending into nested
// objects, and returns the differences sorted by path.
func DiffJSON(old, new json.RawMessage) ([]Diff, error) {
	var a, b map[string]json.RawMessage
	if err := json.Unmarshal(old, &a); err != nil {
		return nil, fmt.Errorf("stored: %w", err)
	}
	if err := json.Unmarshal(new, &b); err != nil {
		return nil, fmt.Errorf("current: %w", err)
	}
	var out []Diff
	diffObjects("", a, b, &out)
	slices.SortFunc(out, func(x, y Diff) int { return strings.Compare(x.Path, y.Path) })
	return out, nil
}

func diffObjects(prefix string, a, b map[string]json.RawMessage, out *[]Diff) {
	for k, av := range a {
		bv, ok := b[k]
		if !ok {
			*out = append(*out, Diff{prefix + k, compactString(av), "absent"})
			continue
		}
		var ao, bo map[string]json.RawMessage
		if json.Unmarshal(av, &ao) == nil && json.Unmarshal(bv, &bo) == nil && ao != nil && bo != nil {
			diffObjects(prefix+k+".", ao, bo, out)
			continue
		}
		if !equalJSON(av, bv) {
			*out = append(*out, Diff{prefix + k, compactString(av), compactString(bv)})
		}
	}
	for k, bv := range b {
		if _, ok := a[k]; !ok {
			*out = append(*out, Diff{prefix + k, "absent", compactString(bv)})
		}
	}
}

// equalJSON compares two JSON values semantically: key order and number
// spelling (1e-3, 0.001) do not matter, and integers compare exactly.
func equalJSON(a, b json.RawMessage) bool {
	x, errx := canonical(a)
	y, erry := canonical(b)
	if errx != nil || erry != nil {
		return bytes.Equal(a, b)
	}
	return x == y
}

// canonical re-encodes a JSON value with sorted keys and normalised numbers.
func canonical(b json.RawMessage) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	out, err := json.Marshal(normNumbers(v))
	return string(out), err
}

func normNumbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return json.Number(strconv.FormatInt(i, 10))
		}
		if f, err := strconv.ParseFloat(string(v), 64); err == nil {
			return json.Number(strconv.FormatFloat(f, 'g', -1, 64))
		}
		return v
	case map[string]any:
		for k, e := range v {
			v[k] = normNumbers(e)
		}
	case []any:
		for i, e := range v {
			v[i] = normNumbers(e)
		}
	}
	return v
}

func compactString(b json.RawMessage) string { return string(compact(b)) }
