package pgaudit

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/hearth-home/hearth/audit"
	"github.com/hearth-home/hearth/internal/httpx"
)

// Handler serves the PostgreSQL history as the file log's Handler does, at
// the same paths (c2sp.org/tlog-tiles v0.1.0 under /.hearth/v1/audit/):
//
//	GET /.hearth/v1/audit/checkpoint               the latest stored signed checkpoint
//	GET /.hearth/v1/audit/tile/<L>/<N>[.p/<W>]     a Merkle tree tile, from the hashes table
//	GET /.hearth/v1/audit/tile/entries/<N>[.p/<W>] an entry bundle, from the entries table
//	GET /.hearth/v1/audit/proof?index=N&size=M     audit.InclusionProof (JSON), from the hashes table
//	GET /.hearth/v1/audit/proof?old=N&size=M       audit.ConsistencyProof (JSON)
//
// Any replica can serve it (tiles are immutable once the tree covers them).
// Unlike the file log's, its checkpoint carries no witness cosignatures. It does not authenticate: the
// server mounts it behind its authentication.
func (l *Log) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := audit.RouteHistory(w, r)
		switch route {
		case audit.HistoryNone:
			return
		case audit.HistoryProof:
			l.serveProof(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
		defer cancel()
		if route == audit.HistoryCheckpoint {
			_, msg, err := l.Latest(ctx)
			if err != nil || msg == nil {
				l.unavailable(w, r, err)
				return
			}
			audit.WriteCheckpoint(w, msg)
			return
		}
		t, err := audit.ParseTilePath(strings.TrimPrefix(r.URL.Path, strings.TrimSuffix(audit.TilePrefix, "tile/")))
		if err != nil || r.URL.RawQuery != "" {
			httpx.Error(w, http.StatusNotFound, "not_found", "no such tile (c2sp.org/tlog-tiles paths: tile/<L>/<N>[.p/<W>], tile/entries/<N>[.p/<W>])")
			return
		}
		size, err := l.treeSize(ctx)
		if err != nil {
			l.unavailable(w, r, err)
			return
		}
		if !audit.TileInTree(t, size) {
			httpx.Error(w, http.StatusNotFound, "not_found", "the tree has no such tile yet")
			return
		}
		var data []byte
		if t.L >= 0 {
			data, err = tlog.ReadTileData(t, l.hashReader(ctx))
		} else {
			data, err = l.entryBundle(ctx, t)
		}
		if err != nil {
			l.unavailable(w, r, err)
			return
		}
		audit.WriteTile(w, t, data)
	})
}

func (l *Log) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	l.log.Error().Err(err).Str("path", r.URL.Path).Msg("pgaudit: serving the audit history")
	httpx.Error(w, http.StatusServiceUnavailable, "unavailable", "the audit history cannot be read now")
}

// entryBundle reads the entries of entry tile t, each with its 2-byte
// big-endian length (tlog-tiles entry bundles).
func (l *Log) entryBundle(ctx context.Context, t tlog.Tile) ([]byte, error) {
	from := t.N * torchwood.TileWidth
	to := from + int64(t.W)
	rows, err := l.pool.Query(ctx, "SELECT seq, body FROM "+Schema+".entries WHERE seq >= $1 AND seq < $2 ORDER BY seq", from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]byte, 0, 512*t.W)
	var line []byte
	next := from
	for rows.Next() {
		var seq int64
		var body []byte
		if err := rows.Scan(&seq, &body); err != nil {
			return nil, err
		}
		if seq != next {
			return nil, fmt.Errorf("entry %d is missing", next)
		}
		if line, err = entryLine(line[:0], seq, body, false); err != nil {
			return nil, err
		}
		if out, err = torchwood.AppendTileEntry(out, line); err != nil {
			return nil, err
		}
		next++
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if next != to {
		return nil, fmt.Errorf("entries end at %d, before %d", next, to)
	}
	return out, nil
}
