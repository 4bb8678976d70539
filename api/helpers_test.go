package api_test

import (
	"testing"

	"strand/api"

	"strand/eventlog/logtest"
	"strand/projector/store/storetest"
)

func logtestRestart(t *testing.T, dir string) *logtest.Server { return logtest.StartAt(t, dir) }

func newDBURL(t *testing.T) string { return storetest.NewURL(t) }

func apiSharedSecretMAC(secret, nonce, user, password string, admin bool) string {
	return api.SharedSecretMAC(secret, nonce, user, password, admin, "")
}
