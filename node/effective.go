package node

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// EffectiveConfigFile is where every node writes the configuration it
// trains with, in its run directory: train.Config's JSON, which `trainer
// train --config` reads back.
const EffectiveConfigFile = "config.json"

// recordConfig logs the configuration this node trains with and writes it
// to RUN_DIR/config.json, replacing the file atomically.
func (n *Node) recordConfig() error {
	b, err := json.MarshalIndent(n.cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("effective config: %w", err)
	}
	n.log.Info("effective config", "hash", n.cfg.Hash(), "config", string(n.configJSON()))
	if n.opt.RunDir == "" {
		return nil
	}
	path := filepath.Join(n.opt.RunDir, EffectiveConfigFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("effective config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("effective config: %w", err)
	}
	return nil
}
