package main

import (
	"encoding/json"
	"fmt"

	"github.com/difftrain/difftrain/checkpoint"
	"github.com/difftrain/difftrain/compute"
	"github.com/difftrain/difftrain/model"
	"github.com/difftrain/difftrain/train"
)

// loadCheckpoint resolves --checkpoint: a checkpoint directory (step-N) or a
// checkpoint root, whose newest verified checkpoint is used.
func loadCheckpoint(path string) (*checkpoint.State, error) {
	if path == "" {
		return nil, fmt.Errorf("--checkpoint is required: a step-NNNNNNNN directory or a checkpoint directory")
	}
	if st, err := checkpoint.Load(path); err == nil {
		return st, nil
	} else if list, lerr := checkpoint.List(path); lerr != nil || len(list) == 0 {
		return nil, err
	}
	st, err := checkpoint.Resolve(path, checkpoint.ResumeAuto, false, nil)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, fmt.Errorf("%s holds no checkpoint", path)
	}
	return st, nil
}

// loadModel builds a model for up to maxBatch sequences from a checkpoint.
func loadModel(b compute.Backend, st *checkpoint.State, maxBatch int) (train.Config, *model.Model, error) {
	var cfg train.Config
	if err := json.Unmarshal(st.Config, &cfg); err != nil {
		return cfg, nil, fmt.Errorf("checkpoint %s: config: %w", st.Dir, err)
	}
	m, err := model.New(b, cfg.Model, maxBatch)
	if err != nil {
		return cfg, nil, err
	}
	if err := setParams(m, st); err != nil {
		m.Close()
		return cfg, nil, err
	}
	return cfg, m, nil
}

// setParams uploads a checkpoint's weights into m.
func setParams(m *model.Model, st *checkpoint.State) error {
	p := make([]float32, m.Params.Len())
	for _, t := range m.Tensors {
		ct, ok := checkpoint.Find(st.Model, t.Name)
		if !ok || len(ct.Data) != t.Size {
			return fmt.Errorf("checkpoint %s: tensor %s missing or of the wrong size", st.Dir, t.Name)
		}
		copy(p[t.Offset:], ct.Data)
	}
	return m.SetParams(p)
}
