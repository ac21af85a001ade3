package checkpoint

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// errNoExchange: the platform or file system cannot swap two directories.
var errNoExchange = errors.New("atomic exchange not supported")

// replace puts the complete save tmp in place of final, a step directory
// that does not verify. Where the file system can swap two directories in
// one step (Linux renameat2 RENAME_EXCHANGE) the step directory is never
// missing; elsewhere the old one is renamed aside first, so a crash between
// the two renames leaves no step directory (and leftovers for Clean), never
// a partial one. The old directory is deleted afterwards.
func (w *Writer) replace(tmp, final string) error {
	name := filepath.Base(final)
	trash := filepath.Join(w.dir, trashPrefix+name+"-"+owner()+"-"+randHex())
	err := exchange(tmp, final)
	switch {
	case err == nil:
		// tmp now holds the old directory.
		if err := os.Rename(tmp, trash); err != nil {
			return fmt.Errorf("moving the replaced %s aside: %w", name, err)
		}
	case errors.Is(err, errNoExchange):
		if err := os.Rename(final, trash); err != nil {
			return fmt.Errorf("moving the damaged %s aside: %w", name, err)
		}
		if err := os.Rename(tmp, final); err != nil {
			return err
		}
	default:
		return fmt.Errorf("replacing %s: %w", name, err)
	}
	if err := syncDir(w.dir); err != nil {
		return err
	}
	if err := os.RemoveAll(trash); err != nil {
		w.log.Warn("could not delete a replaced checkpoint", "path", trash, "err", err)
	}
	return nil
}
