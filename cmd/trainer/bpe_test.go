package main

import (
	"bytes"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/checkpoint"
	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/tokenizer"
)

// TestBPECheckpoint trains a tiny model on a dataset prepared with a BPE
// tokenizer and checks that the tokenizer travels with it: the checkpoint
// carries the dataset's tokenizer.json, sample encodes the prompt and
// decodes the output with it, eval reports bits per byte, export writes it
// beside model.safetensors, and a dataset of another tokenizer of the same
// vocabulary size is refused by resume and eval with both digests named.
func TestBPECheckpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the trainer and trains a model")
	}
	bin := trainerBin(t)
	dir := t.TempDir()
	run := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"--log-level", "warn"}, args...)...)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		out, err := cmd.Output()
		if err != nil {
			return string(out), &buildError{err, errb.Bytes()}
		}
		return string(out), nil
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("trainer %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	// A corpus of 30 documents, and a second one of its first 10.
	text, err := os.ReadFile("../../tokenizer/testdata/corpus.txt")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(text), "\n")
	corpus, part := filepath.Join(dir, "corpus"), filepath.Join(dir, "part")
	os.Mkdir(corpus, 0o755)
	os.Mkdir(part, 0o755)
	for i := range 30 {
		doc := strings.Join(lines[i*len(lines)/30:(i+1)*len(lines)/30], "")
		os.WriteFile(filepath.Join(corpus, fmt.Sprintf("%02d.txt", i)), []byte(doc), 0o644)
		if i < 10 {
			os.WriteFile(filepath.Join(part, fmt.Sprintf("%02d.txt", i)), []byte(doc), 0o644)
		}
	}
	tokA, tokB := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")
	must("tokenizer", "train", "--vocab", "500", "--input", corpus, "--out", tokA)
	must("tokenizer", "train", "--vocab", "500", "--input", part, "--out", tokB)
	dataA, dataB := filepath.Join(dir, "data-a"), filepath.Join(dir, "data-b")
	must("prepare", "--input", corpus, "--out", dataA, "--seq-len", "32", "--val-fraction", "0.3", "--tokenizer", tokA, "--progress=false")
	must("prepare", "--input", corpus, "--out", dataB, "--seq-len", "32", "--val-fraction", "0.3", "--tokenizer", tokB, "--progress=false")
	ta, err := tokenizer.Load(tokA)
	if err != nil {
		t.Fatal(err)
	}
	tb, _ := tokenizer.Load(tokB)
	if ta.Vocab() != tb.Vocab() || ta.SHA256() == tb.SHA256() {
		t.Fatalf("want two tokenizers of one vocabulary size: %d %s, %d %s", ta.Vocab(), ta.SHA256(), tb.Vocab(), tb.SHA256())
	}

	runDir := filepath.Join(dir, "run")
	train := func(data string, steps int) (string, error) {
		return run("train", "--data", data, "--run-dir", runDir, "--layers", "1", "--dim", "16", "--heads", "2",
			"--batch", "4", "--steps", strconv.Itoa(steps), "--warmup", "1", "--noise", "masked", "--min-nodes", "1",
			"--threads", "1", "--codec", "none", "--checkpoint-every", "2", "--progress", "none",
			"--bind", freeAddr(t), "--grpc", freeAddr(t), "--metrics-addr", "")
	}
	if _, err := train(dataA, 4); err != nil {
		t.Fatal(err)
	}
	ckpts := filepath.Join(runDir, "checkpoints")
	st, err := checkpoint.Resolve(ckpts, checkpoint.ResumeAuto, false, nil)
	if err != nil || st == nil {
		t.Fatalf("no checkpoint: %v", err)
	}
	carried, err := os.ReadFile(filepath.Join(st.Dir, checkpoint.TokenizerFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(carried, ta.File()) || st.TokenizerSHA256 != ta.SHA256() || st.Tokenizer != ta.Name() {
		t.Fatalf("checkpoint carries %d bytes, sha %s, name %s; want the dataset's tokenizer %s", len(carried), st.TokenizerSHA256, st.Tokenizer, ta.SHA256())
	}

	// sample: the prompt round-trips through the checkpoint's tokenizer;
	// two adaptive steps of one token leave two of four positions masked,
	// which --special shows and plain decoding skips.
	prompt := "func main() {\n\tfmt.Println(\"héllo\")"
	common := []string{"sample", "--checkpoint", ckpts, "--prompt", prompt, "--steps", "2", "--completion", "4",
		"--sampler", "adaptive", "--top-k", "1", "--prior", "mask", "--threads", "1"}
	out := must(common...)
	if !strings.HasPrefix(out, prompt) {
		t.Fatalf("sample output %q does not begin with the prompt %q", out, prompt)
	}
	mask := ta.Token(dataset.MASK)
	if strings.Contains(out, mask) {
		t.Errorf("sample output %q shows %s without --special", out, mask)
	}
	out = must(append(common, "--special")...)
	if !strings.HasPrefix(out, prompt) || strings.Count(out, mask) != 2 {
		t.Errorf("sample --special output %q: want the prompt and two %s", out, mask)
	}

	// eval: bits per byte = nats/token × tokens / bytes / ln 2.
	out = must("eval", "--checkpoint", ckpts, "--data", dataA, "--samples", "8", "--likelihood-samples", "1", "--steps", "2", "--threads", "1")
	m := regexp.MustCompile(`train ELBO\s+(\S+) nats/token .* (\S+) bits/byte .*; (\d+) tokens, (\d+) bytes of text`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("eval output has no train ELBO line with bits/byte:\n%s", out)
	}
	f := func(s string) float64 { v, _ := strconv.ParseFloat(s, 64); return v }
	elbo, bpb, toks, nb := f(m[1]), f(m[2]), f(m[3]), f(m[4])
	if toks != 8*32 || nb <= toks || math.Abs(bpb-elbo*toks/nb/math.Ln2) > 1e-3*bpb {
		t.Errorf("eval: %v nats/token, %v bits/byte over %v tokens and %v bytes: not nats×tokens/bytes/ln 2", elbo, bpb, toks, nb)
	}
	if !regexp.MustCompile(`likelihood\s+\S+ nats/token .* \S+ bits/byte`).MatchString(out) {
		t.Errorf("eval output has no likelihood line with bits/byte:\n%s", out)
	}
	if _, err := run("eval", "--checkpoint", ckpts, "--data", dataB, "--samples", "2", "--likelihood-samples", "0", "--threads", "1"); err == nil ||
		!strings.Contains(err.Error(), ta.SHA256()) || !strings.Contains(err.Error(), tb.SHA256()) {
		t.Errorf("eval on a dataset of another tokenizer: %v, want both digests named", err)
	}

	// export: tokenizer.json byte for byte, and it loads.
	exp := filepath.Join(dir, "export")
	must("export", "--checkpoint", st.Dir, "--out", exp)
	b, err := os.ReadFile(filepath.Join(exp, "tokenizer.json"))
	if err != nil || !bytes.Equal(b, ta.File()) {
		t.Fatalf("exported tokenizer.json (%v) is not the dataset's file", err)
	}
	if et, err := tokenizer.Load(exp); err != nil || et.Name() != ta.Name() {
		t.Fatalf("exported tokenizer loads as %v, %v", et, err)
	}
	for _, name := range []string{"model.safetensors", "config.json", "tokenizer_config.json", "special_tokens_map.json"} {
		if _, err := os.Stat(filepath.Join(exp, name)); err != nil {
			t.Error(err)
		}
	}

	// resume on the other tokenizer's dataset: refused, both digests named.
	_, err = train(dataB, 6)
	if err == nil || !strings.Contains(err.Error(), ta.SHA256()) || !strings.Contains(err.Error(), tb.SHA256()) {
		t.Fatalf("resume on a dataset of another tokenizer: %v, want both digests named", err)
	}
}

// freeAddr returns a 127.0.0.1 address with a port free at the time.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
