package checkpoint

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// benchState is a state of the L8-d512 vocab-4096 model of gidd-spec §4.5
// (the tensor layout of model.Layout, 29.4M weights) with two optimizer
// moments per weight and, with residuals, a gradient-sized error feedback.
func benchState(residuals bool) *State {
	const v, d, l, h = 4096, 512, 8, 8
	var model []Tensor
	add := func(name string, shape ...int) {
		n := 1
		for _, s := range shape {
			n *= s
		}
		data := make([]float32, n)
		for i := range data {
			data[i] = float32(i%1000) * 1e-3
		}
		model = append(model, Tensor{Name: name, Shape: shape, Data: data})
	}
	add("model.embed_tokens.weight", v, d)
	for i := range l {
		p := fmt.Sprintf("model.layers.%d.", i)
		add(p+"attn_norm.weight", d)
		add(p+"self_attn.q_proj.kernel", d, d)
		add(p+"self_attn.k_proj.kernel", d, d)
		add(p+"self_attn.v_proj.kernel", d, d)
		add(p+"self_attn.q_norm.weight", d)
		add(p+"self_attn.k_norm.weight", d)
		add(p+"self_attn.sink_bias.k", h, d/h)
		add(p+"self_attn.sink_bias.v", h, d/h)
		add(p+"self_attn.o_proj.kernel", d, d)
		add(p+"mlp_norm.weight", d)
		add(p+"mlp.up_proj.kernel", d, 4*d)
		add(p+"mlp.up_proj.bias", 4*d)
		add(p+"mlp.down_proj.kernel", 4*d, d)
		add(p+"mlp.down_proj.bias", d)
	}
	add("model.norm.weight", d)
	add("lm_head.kernel", d, v)
	st := testState(1, 1)
	st.Model, st.Optim, st.Residuals = model, nil, nil
	n := 0
	for _, t := range model {
		st.Optim = append(st.Optim,
			Tensor{Name: t.Name + ".m", Shape: t.Shape, Data: append([]float32(nil), t.Data...)},
			Tensor{Name: t.Name + ".v", Shape: t.Shape, Data: append([]float32(nil), t.Data...)})
		n += len(t.Data)
	}
	if residuals {
		st.Residuals = make([]float32, n)
	}
	st.Config = json.RawMessage(`{"lr":0.001}`)
	return st
}

func floats(ts []Tensor) (n int) {
	for _, t := range ts {
		n += len(t.Data)
	}
	return n
}

// BenchmarkCheckpoint measures, per save of an L8-d512 state: the
// foreground stall of Save (the snapshot copy), the background write until
// Wait returns, and Load (read and verify). Baselines from the same run: a
// plain copy of the same bytes, writing them with one os.File write plus
// fsync, and reading them back with os.ReadFile.
//
//	go test -run '^$' -bench Checkpoint -benchtime 3x ./checkpoint
func BenchmarkCheckpoint(b *testing.B) {
	for _, res := range []bool{false, true} {
		name := "L8-d512-v4096"
		if res {
			name += "+residuals"
		}
		b.Run(name, func(b *testing.B) {
			st := benchState(res)
			all := append(append(append([]Tensor{}, st.Model...), st.Optim...), residualTensors(st.Residuals)...)
			nf := floats(all)
			dir := b.TempDir()
			w, err := NewWriter(dir, Options{Keep: 2, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			if err := w.Prepare(st); err != nil {
				b.Fatal(err)
			}
			first := time.Since(t0)

			// The baselines run on the same bytes in every iteration: a
			// plain single-threaded copy into a warm buffer, one write of
			// them plus fsync, and os.ReadFile of that file.
			flat := make([]float32, nf)
			raw := filepath.Join(dir, "raw")
			var stall, write, load, memcpy, rawWrite, rawRead time.Duration
			var size int64
			b.ResetTimer()
			for i := range b.N {
				st.Step = int64(i + 2)
				t := time.Now()
				off := 0
				for _, x := range all {
					off += copy(flat[off:], x.Data)
				}
				memcpy += time.Since(t)

				t = time.Now()
				if err := w.Save(st); err != nil {
					b.Fatal(err)
				}
				stall += time.Since(t)
				if err := w.Wait(); err != nil {
					b.Fatal(err)
				}
				write += time.Since(t)

				t = time.Now()
				got, err := Load(filepath.Join(dir, StepDir(st.Step)))
				if err != nil {
					b.Fatal(err)
				}
				load += time.Since(t)
				if floats(got.Model)+floats(got.Optim)+len(got.Residuals) != nf {
					b.Fatal("loaded a different number of values")
				}
				size = dirSize(b, got.Dir)
				got = nil

				t = time.Now()
				f, err := os.Create(raw)
				if err == nil {
					_, err = f.Write(byteView(flat))
				}
				if err == nil {
					err = f.Sync()
				}
				f.Close()
				rawWrite += time.Since(t)
				t = time.Now()
				rb, err2 := os.ReadFile(raw)
				rawRead += time.Since(t)
				if err != nil || err2 != nil || len(rb) != 4*nf {
					b.Fatal(err, err2)
				}
				os.Remove(raw)
			}
			b.StopTimer()
			n := time.Duration(b.N)
			stall, write, load = stall/n, (write-stall)/n, load/n
			memcpy, rawWrite, rawRead = memcpy/n, rawWrite/n, rawRead/n
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
			b.ReportMetric(float64(nf)/1e6, "Mfloats")
			b.ReportMetric(float64(size)/1e6, "MB")
			b.ReportMetric(ms(first), "first-stall-ms")
			b.ReportMetric(ms(stall), "stall-ms")
			b.ReportMetric(ms(write), "write-ms")
			b.ReportMetric(ms(load), "load-ms")
			b.ReportMetric(float64(stall)/float64(memcpy), "stall/memcpy")
			b.ReportMetric(float64(write)/float64(rawWrite), "write/rawwrite")
			b.ReportMetric(float64(load)/float64(rawRead), "load/rawread")
			b.Logf("%s: %.1fM floats, %.1f MB on disk; first Save (allocating) %v; Save stall %v (plain copy %v); background write %v (raw write+fsync %v); Load+verify %v (raw read %v)",
				name, float64(nf)/1e6, float64(size)/1e6, first, stall, memcpy, write, rawWrite, load, rawRead)
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

func dirSize(b *testing.B, dir string) int64 {
	ents, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			b.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}
