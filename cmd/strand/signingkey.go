package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"strand/eventlog/matrix"
)

// loadSigningKey reads the server's ed25519 signing key, generating and
// saving one on first start. Every api process of one deployment must use
// the same key file (a shared volume or a mounted secret).
func loadSigningKey(path string) (*matrix.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := matrix.ParseKeyPair(b)
		if err != nil {
			return nil, fmt.Errorf("signing key %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	k, err := matrix.GenerateKeyPair("a_" + randomKeyVersion())
	if err != nil {
		return nil, err
	}
	text, err := k.MarshalText()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	// O_EXCL: if two processes race to create the key, one wins and the
	// other reads the winner's key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return loadSigningKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("create signing key: %w", err)
	}
	if _, err := f.Write(text); err != nil {
		f.Close()
		return nil, fmt.Errorf("write signing key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("write signing key: %w", err)
	}
	return k, f.Close()
}

func randomKeyVersion() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
