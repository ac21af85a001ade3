package checkpoint

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/tokenizer"
)

// tokState is testState for a run on a dataset with a Hugging Face
// tokenizer: the §8.1-layout file our trainer writes.
func tokState(t *testing.T, seed uint64, step int64) *State {
	t.Helper()
	file, err := os.ReadFile(filepath.Join("..", "tokenizer", "testdata", "ours.json"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Parse(file)
	if err != nil {
		t.Fatal(err)
	}
	st := testState(seed, step)
	st.Tokenizer, st.TokenizerJSON, st.TokenizerSHA256 = tok.Name(), file, tok.SHA256()
	return st
}

func TestTokenizerCarried(t *testing.T) {
	dir := t.TempDir()
	st := tokState(t, 3, 5)
	save(t, dir, st, Options{})
	p := stepPath(dir, 5)
	onDisk, err := os.ReadFile(filepath.Join(p, TokenizerFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, st.TokenizerJSON) {
		t.Fatal("tokenizer.json in the checkpoint is not the run's file byte for byte")
	}
	mb, _ := os.ReadFile(filepath.Join(p, ManifestFile))
	m, err := decodeManifest(mb)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := m.lookup(TokenizerFile); !ok || e.SHA256 != st.TokenizerSHA256 || e.Size != int64(len(onDisk)) {
		t.Fatalf("manifest entry %+v (listed %v), want sha256 %s size %d", e, ok, st.TokenizerSHA256, len(onDisk))
	}
	var sf map[string]any
	sb, _ := os.ReadFile(filepath.Join(p, StateFile))
	if err := json.Unmarshal(sb, &sf); err != nil || sf["tokenizer_sha256"] != st.TokenizerSHA256 {
		t.Fatalf("state.json tokenizer_sha256 = %v (%v), want %s", sf["tokenizer_sha256"], err, st.TokenizerSHA256)
	}
	got, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	equalStates(t, got, st)
}

// A byte-level run's checkpoint is as before: no tokenizer file, no
// tokenizer_sha256 in state.json, and such checkpoints load.
func TestBuiltinTokenizerCarriesNoFile(t *testing.T) {
	dir := t.TempDir()
	save(t, dir, testState(1, 2), Options{})
	p := stepPath(dir, 2)
	if _, err := os.Stat(filepath.Join(p, TokenizerFile)); !os.IsNotExist(err) {
		t.Fatalf("a byte-level checkpoint holds %s (%v)", TokenizerFile, err)
	}
	sb, _ := os.ReadFile(filepath.Join(p, StateFile))
	if bytes.Contains(sb, []byte("tokenizer_sha256")) {
		t.Fatalf("state.json of a byte-level run names a tokenizer digest:\n%s", sb)
	}
	st, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.TokenizerJSON != nil || st.TokenizerSHA256 != "" {
		t.Fatalf("loaded tokenizer %d bytes, sha %q", len(st.TokenizerJSON), st.TokenizerSHA256)
	}
}

// rewriteManifest applies edit to the manifest of checkpoint p.
func rewriteManifest(t *testing.T, p string, edit func(*Manifest)) {
	t.Helper()
	mb, _ := os.ReadFile(filepath.Join(p, ManifestFile))
	m, err := decodeManifest(mb)
	if err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, _ := encodeManifest(m)
	if err := os.WriteFile(filepath.Join(p, ManifestFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestTokenizerDamagedRefused(t *testing.T) {
	other, err := os.ReadFile(filepath.Join("..", "tokenizer", "testdata", "gpt2.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, p string)
		want   []string
	}{
		{"byte flipped", func(t *testing.T, p string) {
			f := filepath.Join(p, TokenizerFile)
			b, _ := os.ReadFile(f)
			b[len(b)/2] ^= 1
			os.WriteFile(f, b, 0o644)
		}, []string{"tokenizer.json: sha256", "contents damaged", "not the one it was trained with"}},
		{"truncated", func(t *testing.T, p string) {
			f := filepath.Join(p, TokenizerFile)
			b, _ := os.ReadFile(f)
			os.WriteFile(f, b[:100], 0o644)
		}, []string{"tokenizer.json: 100 bytes", "truncated"}},
		{"missing", func(t *testing.T, p string) { os.Remove(filepath.Join(p, TokenizerFile)) },
			[]string{"tokenizer.json: missing"}},
		{"replaced with its manifest entry", func(t *testing.T, p string) {
			os.WriteFile(filepath.Join(p, TokenizerFile), other, 0o644)
			rewriteManifest(t, p, func(m *Manifest) {
				for i := range m.Files {
					if m.Files[i].Name == TokenizerFile {
						m.Files[i].Size, m.Files[i].SHA256 = int64(len(other)), sha(other)
					}
				}
			})
		}, []string{"tokenizer.json: the manifest lists sha256 " + sha(other), "state.json records tokenizer sha256"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			save(t, dir, tokState(t, 4, 6), Options{})
			p := stepPath(dir, 6)
			tc.damage(t, p)
			_, err := Load(p)
			if err == nil {
				t.Fatal("a damaged tokenizer file was accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// A manifest that lists a tokenizer file the state does not name is refused.
func TestTokenizerWithoutDigestRefused(t *testing.T) {
	dir := t.TempDir()
	save(t, dir, testState(5, 7), Options{})
	p := stepPath(dir, 7)
	file := []byte(`{"not":"read"}`)
	os.WriteFile(filepath.Join(p, TokenizerFile), file, 0o644)
	rewriteManifest(t, p, func(m *Manifest) {
		m.Files = append(m.Files, FileEntry{Name: TokenizerFile, Size: int64(len(file)), SHA256: sha(file)})
	})
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "records no tokenizer_sha256") {
		t.Fatalf("Load: %v, want a tokenizer file without a digest refused", err)
	}
}

// A save whose tokenizer bytes are not the digest it records fails, and
// leaves nothing a reader would take for a checkpoint.
func TestTokenizerSaveMismatchRefused(t *testing.T) {
	dir := t.TempDir()
	st := tokState(t, 6, 8)
	st.TokenizerJSON = append([]byte(nil), st.TokenizerJSON...)
	st.TokenizerJSON[10] ^= 1
	w, err := NewWriter(dir, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Save(st); err != nil {
		t.Fatal(err)
	}
	err = w.Close()
	if err == nil || !strings.Contains(err.Error(), "the state records tokenizer sha256 "+st.TokenizerSHA256) {
		t.Fatalf("Close: %v, want the digest mismatch", err)
	}
	if cps, _ := List(dir); len(cps) != 0 || len(leftovers(t, dir)) != 0 {
		t.Fatalf("a failed save left %v and %v", cps, leftovers(t, dir))
	}
	bad := testState(6, 8)
	bad.TokenizerJSON = []byte("{}")
	if err := bad.check(); err == nil || !strings.Contains(err.Error(), "without its sha256") {
		t.Fatalf("check: %v, want a file without a digest refused", err)
	}
	bad = testState(6, 8)
	bad.TokenizerSHA256 = "ABC"
	if err := bad.check(); err == nil || !strings.Contains(err.Error(), "not 64 lower-case hex digits") {
		t.Fatalf("check: %v, want a malformed digest refused", err)
	}
}

// A node that holds only the dataset's manifest saves the digest alone.
func TestTokenizerDigestOnly(t *testing.T) {
	dir := t.TempDir()
	st := tokState(t, 7, 9)
	st.TokenizerJSON = nil
	save(t, dir, st, Options{})
	got, err := Load(stepPath(dir, 9))
	if err != nil {
		t.Fatal(err)
	}
	if got.TokenizerSHA256 != st.TokenizerSHA256 || got.TokenizerJSON != nil {
		t.Fatalf("loaded sha %q and %d bytes, want %s and none", got.TokenizerSHA256, len(got.TokenizerJSON), st.TokenizerSHA256)
	}
}

func TestCompatibleTokenizer(t *testing.T) {
	st := tokState(t, 8, 10)
	st.Dir = "ck"
	cur := Current{ModelConfig: st.ModelConfig, ModelHash: st.ModelHash, Config: st.Config,
		Tokenizer: st.Tokenizer, TokenizerSHA256: st.TokenizerSHA256, DatasetID: st.DatasetID}
	log := slog.New(slog.DiscardHandler)
	if err := st.Compatible(cur, log); err != nil {
		t.Fatal(err)
	}
	other := strings.Repeat("ab", 32)
	cur.TokenizerSHA256 = other
	err := st.Compatible(cur, log)
	if err == nil || !strings.Contains(err.Error(), st.TokenizerSHA256) || !strings.Contains(err.Error(), other) {
		t.Fatalf("Compatible: %v, want an error naming both digests", err)
	}
	// A byte-level dataset against a BPE checkpoint: the names differ.
	cur.Tokenizer, cur.TokenizerSHA256 = "bytes", ""
	err = st.Compatible(cur, log)
	if err == nil || !strings.Contains(err.Error(), `"bytes"`) || !strings.Contains(err.Error(), "file sha256 "+st.TokenizerSHA256) {
		t.Fatalf("Compatible: %v, want an error naming both tokenizers", err)
	}
	// A checkpoint written before checkpoints carried tokenizers resumes
	// on the same tokenizer: its name holds the digest's prefix.
	old := *st
	old.TokenizerSHA256, old.TokenizerJSON = "", nil
	cur.Tokenizer, cur.TokenizerSHA256 = st.Tokenizer, st.TokenizerSHA256
	if err := old.Compatible(cur, log); err != nil {
		t.Fatal(err)
	}
}

func TestExportTokenizer(t *testing.T) {
	dir := t.TempDir()
	st := tokState(t, 9, 11)
	save(t, dir, st, Options{})
	out := filepath.Join(t.TempDir(), "export")
	names, err := ExportWith(stepPath(dir, 11), out, ExportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{ExportWeights, ExportConfig, TokenizerFile, ExportTokenizerConfig, ExportSpecialTokens}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("wrote %v, want %v", names, want)
	}
	b, err := os.ReadFile(filepath.Join(out, TokenizerFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, st.TokenizerJSON) {
		t.Fatal("exported tokenizer.json differs from the run's")
	}
	tok, err := tokenizer.Load(out) // a directory holding tokenizer.json
	if err != nil {
		t.Fatal(err)
	}
	if tok.Name() != st.Tokenizer {
		t.Fatalf("exported tokenizer is %s, want %s", tok.Name(), st.Tokenizer)
	}
	var special, conf map[string]any
	for _, f := range []struct {
		name string
		v    *map[string]any
	}{{ExportSpecialTokens, &special}, {ExportTokenizerConfig, &conf}} {
		b, _ := os.ReadFile(filepath.Join(out, f.name))
		if !bytes.Contains(b, []byte(tok.Token(3))) {
			t.Errorf("%s does not spell %s as it is:\n%s", f.name, tok.Token(3), b)
		}
		if err := json.Unmarshal(b, f.v); err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
	}
	for id, k := range []string{"bos_token", "eos_token", "pad_token", "mask_token"} {
		if special[k] != tok.Token(int32(id)) || conf[k] != tok.Token(int32(id)) {
			t.Errorf("%s = %v / %v, want %q", k, special[k], conf[k], tok.Token(int32(id)))
		}
	}
	if conf["tokenizer_class"] != "PreTrainedTokenizerFast" || conf["model_max_length"] != 32.0 {
		t.Errorf("tokenizer_config.json = %v", conf)
	}
	var cfg map[string]any
	cb, _ := os.ReadFile(filepath.Join(out, ExportConfig))
	json.Unmarshal(cb, &cfg)
	if cfg["bos_token_id"] != 0.0 || cfg["eos_token_id"] != 1.0 || cfg["pad_token_id"] != 2.0 || cfg["mask_token_id"] != 3.0 {
		t.Errorf("config.json special ids: %v %v %v %v", cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"], cfg["mask_token_id"])
	}
	if d := cfg["difftrain"].(map[string]any); d["tokenizer_sha256"] != st.TokenizerSHA256 {
		t.Errorf("config.json difftrain.tokenizer_sha256 = %v", d["tokenizer_sha256"])
	}
}

// A checkpoint that records a digest but carries no file exports only with
// the right file given.
func TestExportTokenizerFallback(t *testing.T) {
	dir := t.TempDir()
	st := tokState(t, 10, 12)
	file := st.TokenizerJSON
	st.TokenizerJSON = nil
	save(t, dir, st, Options{})
	p := stepPath(dir, 12)
	out := t.TempDir()
	if _, err := ExportWith(p, out, ExportOptions{}); err == nil || !strings.Contains(err.Error(), "carries no tokenizer.json") {
		t.Fatalf("export without the file: %v", err)
	}
	other, _ := os.ReadFile(filepath.Join("..", "tokenizer", "testdata", "gpt2.json"))
	if _, err := ExportWith(p, out, ExportOptions{Tokenizer: other}); err == nil || !strings.Contains(err.Error(), "the checkpoint was trained with the tokenizer of sha256 "+st.TokenizerSHA256) {
		t.Fatalf("export with another tokenizer: %v", err)
	}
	if _, err := ExportWith(p, out, ExportOptions{Tokenizer: file}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, TokenizerFile)); !bytes.Equal(b, file) {
		t.Fatal("exported tokenizer.json differs from the file given")
	}
	// An older checkpoint names its tokenizer only: the name decides.
	dir2 := t.TempDir()
	st2 := tokState(t, 11, 13)
	st2.TokenizerJSON, st2.TokenizerSHA256 = nil, ""
	save(t, dir2, st2, Options{})
	if _, err := ExportWith(stepPath(dir2, 13), t.TempDir(), ExportOptions{}); err == nil || !strings.Contains(err.Error(), "carries no tokenizer.json") {
		t.Fatalf("export of an older checkpoint without its tokenizer: %v", err)
	}
	if _, err := ExportWith(stepPath(dir2, 13), t.TempDir(), ExportOptions{Tokenizer: other}); err == nil || !strings.Contains(err.Error(), "the checkpoint was trained with "+st2.Tokenizer) {
		t.Fatalf("export of an older checkpoint with another tokenizer: %v", err)
	}
}
