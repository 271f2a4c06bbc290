//go:build unix

package engineer

import (
	"os"
	"path/filepath"
	"syscall"
)

// lockCache serialises commands on one cache: two `actas support token`
// racing to refresh would present one refresh token twice, and actas ends
// a grant whose refresh token is reused.
func lockCache(path string) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
