package seller

import (
	"encoding/base64"
	"strconv"
	"strings"
)

// Cursor pagination (AdCP core/pagination-request.json and
// pagination-response.json): a list request may carry pagination
// {max_results, cursor}; a list answer carries pagination {has_more,
// cursor, total_count}, with a cursor exactly when has_more is true.

// Page sizes: AdCP's default and maximum max_results.
const (
	defaultPageSize = 50
	maxPageSize     = 100
)

// paginationRequest is a list request's pagination.
type paginationRequest struct {
	MaxResults int    `json:"max_results,omitempty" jsonschema:"the most items per page, 1 to 100 (default 50)"`
	Cursor     string `json:"cursor,omitempty" jsonschema:"the cursor of the previous page, to fetch the next one"`
}

// pagination is a list answer's pagination.
type pagination struct {
	HasMore    bool   `json:"has_more"`
	Cursor     string `json:"cursor,omitempty"`
	TotalCount int    `json:"total_count"`
}

// paginate returns the page of items p asks for. list names the listing
// (such as "formats"): a cursor is good for the listing that issued it
// only. The cursor is an offset into items, which the seller lists in a
// stable order (oldest first), so that walking the pages sees every item
// once while nothing is added.
func paginate[T any](list string, items []T, p *paginationRequest) ([]T, pagination, error) {
	size, offset := defaultPageSize, 0
	if p != nil {
		if p.MaxResults != 0 {
			if p.MaxResults < 1 || p.MaxResults > maxPageSize {
				return nil, pagination{}, badRequest("pagination.max_results", "pagination.max_results must be between 1 and 100")
			}
			size = p.MaxResults
		}
		if p.Cursor != "" {
			o, ok := decodeCursor(list, p.Cursor)
			if !ok {
				return nil, pagination{}, badRequest("pagination.cursor", "pagination.cursor is not a cursor of this listing: send the cursor of the previous page as given, or none for the first page")
			}
			offset = o
		}
	}
	page := pagination{TotalCount: len(items)}
	if offset >= len(items) {
		return items[:0], page, nil
	}
	end := min(offset+size, len(items))
	if end < len(items) {
		page.HasMore, page.Cursor = true, encodeCursor(list, end)
	}
	return items[offset:end], page, nil
}

func encodeCursor(list string, offset int) string {
	return base64.RawURLEncoding.EncodeToString([]byte(list + ":" + strconv.Itoa(offset)))
}

func decodeCursor(list, cursor string) (int, bool) {
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return 0, false
	}
	rest, ok := strings.CutPrefix(string(b), list+":")
	if !ok {
		return 0, false
	}
	o, err := strconv.Atoi(rest)
	if err != nil || o < 0 {
		return 0, false
	}
	return o, true
}
