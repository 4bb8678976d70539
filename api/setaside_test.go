package api_test

import (
	"context"
	"testing"

	"strand/api/apitest"
)

// A write whose record the projection sets aside is not reported as a
// success: the client gets 400, never 200 for something no read will
// show. (The projection is made to refuse the record with a real
// PostgreSQL constraint, as it would refuse a value the input checks
// missed.)
func TestWriteSetAsideIsNotASuccess(t *testing.T) {
	env := apitest.New(t)
	env.Projector()
	c := apitest.NewClient(t, env.Serve(apitest.DefaultConfig()).URL)
	c.Register("refused", "pw")
	if _, err := env.Store().Pool().Exec(context.Background(),
		`ALTER TABLE account_data ADD CONSTRAINT test_refuse CHECK (type <> 'org.example.refused')`); err != nil {
		t.Fatal(err)
	}
	r := c.Do("PUT", "/_matrix/client/v3/user/"+c.UserID+"/account_data/org.example.refused", map[string]any{"a": 1})
	if r.Status != 400 || r.Errcode() != "M_BAD_JSON" {
		t.Fatalf("set-aside write answered %d %s", r.Status, r.Raw)
	}
	recs, err := env.Store().SetAsideRecords(context.Background())
	if err != nil || len(recs) != 1 {
		t.Fatalf("set aside: %v %v", recs, err)
	}
	// The lane went on: the next write of the same user is applied.
	c.MustDo("PUT", "/_matrix/client/v3/user/"+c.UserID+"/account_data/org.example.fine", map[string]any{"a": 1})
	if got := c.MustDo("GET", "/_matrix/client/v3/user/"+c.UserID+"/account_data/org.example.fine", nil); got.Body["a"] != float64(1) {
		t.Fatalf("account data after the set-aside write: %s", got.Raw)
	}
}
