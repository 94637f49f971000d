-- Names every key of a JSON request body for the billing server, which knows the request
-- message and refuses a field it does not have (FIELD_UNKNOWN). Envoy's JSON transcoder drops
-- unknown fields silently and offers no option to refuse them; this filter runs before it.
--
-- The header x-billing-json-fields carries the dotted paths of the keys ("a", "a.b"; arrays
-- add no segment), each segment with every character outside [A-Za-z0-9_] percent-encoded.
-- A key is named as the transcoder reads it, its JSON escapes decoded ("n\u0061me" is "name",
-- a surrogate pair one UTF-8 character), so "name" and "n\u0061me" in one object are a key
-- written twice. A body that does not begin with "{" gets no header: the transcoder refuses
-- it (or no route takes it). One that begins with "{" but is not strict JSON (RFC 8259) is
-- refused here (400): the transcoder is lenient (single-quoted strings, bare keys, trailing
-- commas, any depth) and would take such a body with none of the checks below (a misspelt
-- field dropped, a key written twice kept last, silently). So is one nested deeper than
-- MAX_DEPTH, or with text after its object.
-- A key written twice in one object (which the transcoder would keep the last of, silently)
-- comes first in the header, its path after a "!" (never part of an encoded path), and the
-- server refuses the request (MALFORMED_REQUEST naming it). The path of every array that
-- holds a null item (which the transcoder drops silently from a list) comes next, each once
-- after a "~": the server refuses one that is one of the request's lists (FIELD_INVALID naming
-- it), and lets it be a JSON null inside a free-form value (google.protobuf.Struct). Every
-- such path is named, not only the first: a null inside free-form `properties` must not hide
-- a null item of the list after it. A field written twice in one object in its two spellings
-- (`credit_type` and `creditType`, `event_time` and `timestamp`), which the transcoder also
-- reads as one field and keeps the last of, comes before those, the path of the second key
-- after a "^", each once: the server refuses one that names a field of the request
-- (MALFORMED_REQUEST naming it) and lets two keys of a free-form value (`properties`, a map)
-- be. The path of every key whose value is a JSON array (or null) comes next, each once after
-- a "[", and of every array holding an array after a "[[": the transcoder takes a lone value
-- for a list (`"scopes": "checkout"`, an object for `events`) and flattens a list of lists,
-- so the server refuses a list field given anything but an array of values (MALFORMED_REQUEST
-- naming it), and lets a free-form value (`properties`) hold any shape. A body whose
-- null-holding, twice-spelt and list paths pass MAX_HEADER is refused whole (400), never cut
-- short.
-- It also refuses CORS preflights from origins that are not allowed (403), which would
-- otherwise look like an unknown route.
--
-- A query parameter given more than once (`?required=1&required=1000`), which the transcoder
-- would also keep the last of silently unless its field is repeated, is named in the header
-- x-billing-query-repeats (its name split at its dots, then each segment percent-decoded and
-- encoded as above, comma-separated): the server knows the request message, lets a repeated field
-- repeat and refuses any other (MALFORMED_REQUEST naming it).
--
-- Every parameter name of the query is named, once, in the header x-billing-query-fields
-- (encoded the same way): the transcoder binds a query parameter over what the URL path binds
-- (`/mgt/v1/accounts/A/credits/grants?account=B` granted to B), so the server refuses a
-- parameter naming a field the route's path (or a `body: "field"` binding's body) binds.
-- A query naming more than the header can carry is refused here (400), never cut short.
-- A name whose value has a blank comma-separated item (`update_mask=,name`, `update_mask=`)
-- carries a "~" before it: the server refuses it when the field is a field mask (FIELD_INVALID),
-- whose empty items the transcoder would drop silently. One with an item that is neither
-- snake_case nor lowerCamelCase (`update_mask=NAME`) carries a "^": the transcoder would fold its
-- case into a field name, and the server refuses it as gRPC refuses the same path.
-- One whose value the transcoder would read as a boolean though it is not `true` or `false`
-- (`yes`, `t`, `1`, `TRUE`) carries a "?": the server refuses it when the field is a boolean.
-- One written without `=` (`?include_inactive`), which the transcoder ignores, carries a "=";
-- a parameter with no name (`?=1`, `?=`), which it also ignores, is named "@". The server
-- refuses both (MALFORMED_REQUEST). An empty pair (`&&`, a trailing `&`) is no parameter.

-- A method a REST path does not take (`DELETE /mgt/v1/events`, `TRACE` anywhere) is answered
-- 405 with `Allow` naming the methods it takes, before the transcoder (which answered 404, as
-- for a path that does not exist). ROUTES is written before this file by `gateway.render`,
-- from the descriptor set's REST bindings: by a path's number of "/", a list of
-- {Lua pattern, methods}. Without it (the file loaded alone) nothing is checked.
ROUTES = ROUTES or {}

local function allowed_methods(url)
  local bare = url:match("^[^?]*")
  local _, slashes = bare:gsub("/", "")
  local found, any = {}, false
  for _, route in ipairs(ROUTES[slashes] or {}) do
    if bare:find(route[1]) then
      for verb in route[2]:gmatch("[A-Z]+") do
        found[verb] = true
        any = true
      end
    end
  end
  if not any then
    return nil
  end
  return found
end

local function refuse_method(handle, headers, url)
  local method = headers:get(":method") or ""
  if method == "OPTIONS" then
    return false
  end
  local allowed = allowed_methods(url)
  -- HEAD is no method of a binding: the transcoder answers it 404, as for a path that does
  -- not exist, so it is 405 here too (`Allow` names GET where the path takes it).
  if allowed == nil or allowed[method] then
    return false
  end
  local list = {}
  for verb, _ in pairs(allowed) do
    list[#list + 1] = verb
  end
  table.sort(list)
  local allow = table.concat(list, ", ")
  handle:respond({[":status"] = "405", ["content-type"] = "text/plain", ["allow"] = allow},
    "this path takes " .. allow .. ", not " .. method:sub(1, 16))
  return true
end

local HEADER = "x-billing-json-fields"
local REPEATS = "x-billing-query-repeats"
local QUERY = "x-billing-query-fields"
local FRACTIONS = "x-billing-json-fractions"
local MAX_HEADER = 16384
local MAX_DEPTH = 64
-- The one JSON name of the contract that is not its field's proto name in lowerCamel
-- (UsageEvent.event_time is `timestamp`, seed 001's); tests/gateway keeps this in step.
local ALIASES = {timestamp = "eventTime"}

-- A key as the JSON name of the field it would name (protobuf's ToJsonName: `credit_type` and
-- `creditType` are both `creditType`), so two spellings of one field meet.
local function spelling(key)
  local alias = ALIASES[key]
  if alias then
    return alias
  end
  return (key:gsub("_+(.?)", function(c)
    return c:upper()
  end))
end

local function skip_ws(s, i)
  return (s:find("[^ \t\r\n]", i))
end

local function read_string(s, i)
  local j = i + 1
  while true do
    local q = s:find('["\\]', j)
    if not q then
      return nil
    end
    if s:byte(q) == 34 then
      return s:sub(i + 1, q - 1), q + 1
    end
    j = q + 2
  end
end

local ESCAPES = {
  [34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f", [110] = "\n", [114] = "\r",
  [116] = "\t",
}

local function utf8_char(cp)
  if cp < 0x80 then
    return string.char(cp)
  elseif cp < 0x800 then
    return string.char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40)
  elseif cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 0x1000), 0x80 + math.floor(cp / 0x40) % 0x40,
      0x80 + cp % 0x40)
  end
  return string.char(0xF0 + math.floor(cp / 0x40000), 0x80 + math.floor(cp / 0x1000) % 0x40,
    0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

-- The raw text of a JSON string (between its quotes) with its escapes decoded, as the
-- transcoder reads a key. An escape JSON does not have stays as written: the transcoder refuses
-- a short \u itself, but drops a key with another one ("a\x") silently, and a name with a
-- backslash names no field, so the server refuses it (FIELD_UNKNOWN).
local function unescape(raw)
  if not raw:find("\\", 1, true) then
    return raw
  end
  local parts, i = {}, 1
  while true do
    local b = raw:find("\\", i, true)
    if not b then
      parts[#parts + 1] = raw:sub(i)
      return table.concat(parts)
    end
    parts[#parts + 1] = raw:sub(i, b - 1)
    local c = raw:byte(b + 1)
    local hex = c == 117 and raw:match("^%x%x%x%x", b + 2)
    if hex then
      local cp = tonumber(hex, 16)
      i = b + 6
      if cp >= 0xD800 and cp <= 0xDBFF then
        local low = raw:match("^\\u(%x%x%x%x)", i)
        local lo = low and tonumber(low, 16)
        if lo and lo >= 0xDC00 and lo <= 0xDFFF then
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
          i = i + 6
        end
      end
      parts[#parts + 1] = utf8_char(cp)
    elseif c and ESCAPES[c] then
      parts[#parts + 1] = ESCAPES[c]
      i = b + 2
    else
      parts[#parts + 1] = "\\"
      i = b + 1
    end
  end
end

local function encode(key)
  return (key:gsub("[^%w_]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

local value

local function object(s, i, prefix, out, depth)
  i = skip_ws(s, i + 1)
  if not i then
    return nil
  end
  if s:byte(i) == 125 then
    return i + 1
  end
  local keys, spellings = {}, {}
  while true do
    if s:byte(i) ~= 34 then
      return nil
    end
    local raw, j = read_string(s, i)
    if not raw then
      return nil
    end
    local key = unescape(raw)
    local path = encode(key)
    if prefix ~= "" then
      path = prefix .. "." .. path
    end
    if keys[key] then
      out.duplicate = out.duplicate or path
    elseif key:find("^[%w_]+$") then
      local as_json = spelling(key)
      if spellings[as_json] then
        out.twin(path)
      end
      spellings[as_json] = true
    end
    keys[key] = true
    out.add(path)
    j = skip_ws(s, j)
    if not j or s:byte(j) ~= 58 then
      return nil
    end
    j = skip_ws(s, j + 1)
    if not j then
      return nil
    end
    local first = s:byte(j)
    if first == 91 or (first == 110 and s:sub(j, j + 3) == "null") then
      out.listed("[" .. path)
    end
    j = value(s, j, path, out, depth + 1)
    if not j then
      return nil
    end
    j = skip_ws(s, j)
    if not j then
      return nil
    end
    local c = s:byte(j)
    if c == 125 then
      return j + 1
    end
    if c ~= 44 then
      return nil
    end
    i = skip_ws(s, j + 1)
    if not i then
      return nil
    end
  end
end

local function array(s, i, prefix, out, depth)
  i = skip_ws(s, i + 1)
  if not i then
    return nil
  end
  if s:byte(i) == 93 then
    return i + 1
  end
  while true do
    if s:byte(i) == 110 and s:sub(i, i + 3) == "null" then
      out.null_item(prefix)
    elseif s:byte(i) == 91 then
      out.listed("[[" .. prefix)
    end
    i = value(s, i, prefix, out, depth + 1)
    if not i then
      return nil
    end
    i = skip_ws(s, i)
    if not i then
      return nil
    end
    local c = s:byte(i)
    if c == 93 then
      return i + 1
    end
    if c ~= 44 then
      return nil
    end
    i = skip_ws(s, i + 1)
    if not i then
      return nil
    end
  end
end

-- Whether a JSON number literal with a fraction or an exponent is a whole number as written,
-- exactly ("900.0", "9e2", "90000e-2" are; "899.99999999999999999" is not). The transcoder
-- reads a JSON number as a binary double before it takes an integer field's value, so a
-- literal that is not whole but rounds to a whole double (that one is 900.0) would be taken
-- rounded, silently: such a key is named in x-billing-json-fractions and the server refuses
-- it when its field is an integer (MALFORMED_REQUEST), and lets free-form values keep it.
local function whole(literal)
  local int, frac, exp = literal:match("^%-?(%d+)%.?(%d*)[eE]?([%+%-]?%d*)$")
  if not int then
    return true -- not a JSON number: the transcoder refuses it itself
  end
  local digits = (int .. frac):gsub("^0+", "")
  if digits == "" then
    return true -- zero
  end
  local shift = (tonumber(exp) or 0) - #frac
  if shift >= 0 then
    return true
  end
  local trailing = #digits - #(digits:gsub("0+$", ""))
  return trailing >= -shift
end

-- Whether a literal that begins like a number is one as RFC 8259 writes it: an optional
-- minus, 0 or digits not led by 0, a point only with digits after it, an exponent only with
-- digits. The transcoder also took "900." and "9.e2" (as 900), where strict JSON is the rule.
local function strict_number(literal)
  local int, rest = literal:match("^%-?(%d+)(.*)$")
  if not int or (#int > 1 and int:sub(1, 1) == "0") then
    return false
  end
  if rest:sub(1, 1) == "." then
    local digits = rest:match("^%.(%d+)")
    if not digits then
      return false
    end
    rest = rest:sub(#digits + 2)
  end
  return rest == "" or rest:find("^[eE][%+%-]?%d+$") ~= nil
end

value = function(s, i, prefix, out, depth)
  if depth > MAX_DEPTH then
    return nil
  end
  local c = s:byte(i)
  if c == 123 then
    return object(s, i, prefix, out, depth)
  elseif c == 91 then
    return array(s, i, prefix, out, depth)
  elseif c == 34 then
    local _, j = read_string(s, i)
    return j
  end
  local j = s:find("[,%]} \t\r\n]", i) or (#s + 1)
  if c == 45 or (c and c >= 48 and c <= 57) then
    local literal = s:sub(i, j - 1)
    if not strict_number(literal) then
      return nil
    end
    if literal:find("[.eE]") and not whole(literal) then
      out.fraction(prefix)
    end
  end
  return j
end

local function collect(s)
  local paths, seen, size = {}, {}, 0
  local out = {}
  out.add = function(path)
    if seen[path] or size + #path + 1 > MAX_HEADER then
      return
    end
    seen[path] = true
    size = size + #path + 1
    paths[#paths + 1] = path
  end
  local nulls, null_seen, null_size = {}, {}, 0
  out.null_item = function(path)
    if null_seen[path] then
      return
    end
    null_seen[path] = true
    null_size = null_size + #path + 2
    if null_size > MAX_HEADER then
      out.null_overflow = true
      return
    end
    nulls[#nulls + 1] = "~" .. path
  end
  local twins, twin_seen = {}, {}
  out.twin = function(path)
    if twin_seen[path] then
      return
    end
    twin_seen[path] = true
    null_size = null_size + #path + 2
    if null_size > MAX_HEADER then
      out.null_overflow = true
      return
    end
    twins[#twins + 1] = "^" .. path
  end
  local lists, list_seen = {}, {}
  out.listed = function(marked)
    if list_seen[marked] then
      return
    end
    list_seen[marked] = true
    null_size = null_size + #marked + 1
    if null_size > MAX_HEADER then
      out.null_overflow = true
      return
    end
    lists[#lists + 1] = marked
  end
  local fractions, fraction_seen = {}, {}
  out.fraction = function(path)
    if fraction_seen[path] then
      return
    end
    fraction_seen[path] = true
    null_size = null_size + #path + 1
    if null_size > MAX_HEADER then
      out.null_overflow = true
      return
    end
    fractions[#fractions + 1] = path
  end
  local i = skip_ws(s, 1)
  if not i or s:byte(i) ~= 123 then
    return nil
  end
  local after = object(s, i, "", out, 0)
  if not after or skip_ws(s, after) then
    return nil, "the request body is not strict JSON (RFC 8259: double-quoted keys and"
      .. " strings, no trailing comma, nothing after the object) or nests deeper than "
      .. MAX_DEPTH .. " levels"
  end
  if out.null_overflow then
    return nil, "the JSON body holds more lists, null items, fields spelt twice or numbers"
      .. " that are not whole than the gateway checks"
  end
  for k = #lists, 1, -1 do
    table.insert(paths, 1, lists[k])
  end
  for k = #nulls, 1, -1 do
    table.insert(paths, 1, nulls[k])
  end
  for k = #twins, 1, -1 do
    table.insert(paths, 1, twins[k])
  end
  if out.duplicate then
    table.insert(paths, 1, "!" .. out.duplicate)
  end
  return paths, nil, table.concat(fractions, ",")
end

local function decode(name)
  return (name:gsub("%%(%x%x)", function(h)
    return string.char(tonumber(h, 16))
  end))
end

-- Whether a query value, split at commas as the transcoder splits a field mask, has a blank
-- item ("", ",name", "name,,x", " "): the transcoder drops empty items silently.
local function has_blank_item(raw)
  local value = decode((raw:gsub("%+", " ")))
  for item in (value .. ","):gmatch("([^,]*),") do
    if not item:find("%S") then
      return true
    end
  end
  return false
end

-- Whether a query value, split as a field mask, has an item that is neither snake_case nor
-- lowerCamelCase in one of its dotted segments ("NAME", "Name", "productID", "credit_Grants"):
-- the transcoder folds case into the proto name ("NAME" became "name"), where gRPC, whose paths
-- are case-sensitive, refuses the same mask.
local function has_miscased_item(raw)
  local value = decode((raw:gsub("%+", " ")))
  for item in (value .. ","):gmatch("([^,]*),") do
    for segment in (item .. "."):gmatch("([^.]*)%.") do
      if segment:find("%u") and (segment:find("_") or segment:find("^%s*%u") or segment:find("%u%u")) then
        return true
      end
    end
  end
  return false
end

-- What the transcoder reads as a boolean besides `true` and `false` (any case): `yes`, `t`,
-- `1`, `n`... A parameter whose value is one of them carries a "?" before its name; the
-- server refuses it when the field is a boolean (the document says true or false), and lets
-- `1` and `0` be numbers where the field is one.
local LOOSE_BOOLEANS = {t = true, yes = true, y = true, ["1"] = true, f = true, no = true,
  n = true, ["0"] = true, ["true"] = true, ["false"] = true}

local function loose_boolean(raw)
  local value = decode(raw)
  return value ~= "true" and value ~= "false" and LOOSE_BOOLEANS[value:lower()] == true
end

-- The names of the query of `path`, each once, and those given more than once, each dotted
-- segment encoded and comma-separated; nil for a query whose names pass MAX_HEADER.
local function query_params(path)
  local query = path and path:match("%?(.*)$")
  if not query then
    return "", ""
  end
  local count, names, repeats, size = {}, {}, {}, 0
  for pair in query:gmatch("[^&]+") do
    -- Split at its dots before decoding, as the transcoder does: `update_mask%2Epaths` is
    -- one segment holding a dot (no field), never `update_mask.paths`.
    local segments = {}
    for segment in (pair:match("^[^=]*") .. "."):gmatch("([^.]*)%.") do
      segments[#segments + 1] = encode(decode(segment))
    end
    local name = table.concat(segments, ".")
    count[name] = (count[name] or 0) + 1
    if count[name] <= 2 then
      local named = name
      if name == "" then
        named = "@"
      elseif count[name] == 1 and not pair:find("=", 1, true) then
        named = "=" .. named
      elseif count[name] == 1 and has_blank_item(pair:match("=(.*)$") or "") then
        named = "~" .. named
      elseif count[name] == 1 and loose_boolean(pair:match("=(.*)$") or "") then
        named = "?" .. named
      elseif count[name] == 1 and has_miscased_item(pair:match("=(.*)$") or "") then
        named = "^" .. named
      end
      size = size + #named + 1
      if size > MAX_HEADER then
        return nil, nil
      end
      if count[name] == 1 then
        names[#names + 1] = named
      else
        repeats[#repeats + 1] = named
      end
    end
  end
  return table.concat(names, ","), table.concat(repeats, ",")
end

-- A header that is gRPC's own: its name begins with "grpc-" (a deadline, an encoding, a
-- status, a retry count) or ends with "-bin" (binary metadata, base64). The transcoder passes
-- a REST request's headers on as the gRPC call's metadata, and grpcio parses these itself,
-- before any code of the server runs: one it cannot parse was a 500 INTERNAL without a reason.
-- A REST call has no use for any of them, so each is refused (400 MALFORMED_REQUEST).
-- So is a header whose name gRPC metadata cannot carry (only 0-9 a-z - _ . are allowed
-- there; HTTP allows `!#$%&'*+^`|~` too): the transcoder passed it on and grpcio refused the
-- call, 500 INTERNAL "Illegal header key".
function grpc_own_header(headers)
  for name, _ in pairs(headers) do
    if name:find("^grpc%-") or name:find("%-bin$") or
        (name:sub(1, 1) ~= ":" and name:find("[^0-9a-z%-_.]")) then
      return name
    end
  end
  return nil
end

function refuse_grpc_header(name)
  if not name:find("^grpc%-") and not name:find("%-bin$") then
    return "the header name " .. string.format("%q", name:sub(1, 64)) .. " holds a " ..
      "character gRPC metadata cannot carry (names take 0-9 a-z - _ . only)"
  end
  return "the header " .. string.format("%q", name:sub(1, 64)) .. " is gRPC's own " ..
    "(names beginning with grpc- or ending in -bin): a REST call sends none"
end

function envoy_on_request(handle)
  local headers = handle:headers()
  headers:remove(HEADER)
  headers:remove(REPEATS)
  headers:remove(QUERY)
  headers:remove(FRACTIONS)
  local names, repeats = query_params(headers:get(":path"))
  if names == nil then
    handle:respond({[":status"] = "400", ["content-type"] = "text/plain"},
      "the query names more parameters than the gateway accepts")
    return
  end
  if names ~= "" then
    headers:add(QUERY, names)
  end
  if repeats ~= "" then
    headers:add(REPEATS, repeats)
  end
  local kind = (headers:get("content-type") or ""):lower()
  local url = headers:get(":path") or ""
  local rest = url:find("^/api/v1/") or url:find("^/mgt/v1/")
  if rest and refuse_method(handle, headers, url) then
    return
  end
  local own = rest and grpc_own_header(headers)
  if own then
    handle:respond({[":status"] = "400", ["content-type"] = "text/plain"}, refuse_grpc_header(own))
    return
  end
  if rest and kind:find("^application/grpc") and not kind:find("^application/grpc%-web") then
    -- A gRPC content type (not grpc-web, which the transcoder reads as JSON) on a REST route
    -- (/api/v1/, /mgt/v1/; a gRPC method's own path stays Envoy's UNIMPLEMENTED):
    -- the transcoder would pass the request to the server untranscoded, and the server's
    -- answer to bytes that are no gRPC message of this path is a reset Envoy reports as 503
    -- "unavailable; retry" (or INTERNAL). Refused here, 400 MALFORMED_REQUEST; Envoy answers
    -- a gRPC caller in gRPC, so the grpc-status is given too (INVALID_ARGUMENT, where
    -- Envoy's own mapping of a 400 would be INTERNAL).
    handle:respond({[":status"] = "400", ["content-type"] = "text/plain", ["grpc-status"] = "3"},
      "a REST route takes JSON (content-type: application/json); a gRPC caller calls the " ..
      "method's own path on the gRPC server")
    return
  end
  local coding = (headers:get("content-encoding") or ""):lower():gsub("^%s+", ""):gsub("%s+$", "")
  if rest and coding ~= "" and coding ~= "identity" then
    -- The gateway does not decompress request bodies: a compressed body would be read as
    -- JSON (refused as garbage), and a plain one under a gzip label taken as if the label
    -- meant nothing. Either way the client and the server would disagree on the body.
    handle:respond({[":status"] = "400", ["content-type"] = "text/plain"},
      "a REST request body is sent as is: Content-Encoding " ..
      string.format("%q", coding:sub(1, 32)) .. " is not accepted (send it uncompressed)")
    return
  end
  local method = headers:get(":method")
  if method == "OPTIONS" and headers:get("origin") and headers:get("access-control-request-method") then
    -- The CORS filter before this one answers preflights from allowed origins; any other
    -- preflight is refused (the gateway's 403 mapper gives it the JSON error shape).
    handle:respond({[":status"] = "403", ["content-type"] = "text/plain"}, "origin not allowed")
    return
  end
  if method ~= "POST" and method ~= "PUT" and method ~= "PATCH" then
    -- A GET or DELETE binding has no `body`, yet the transcoder reads a JSON body sent with
    -- one into the request all the same: its keys are named too. Only a request that says it
    -- has a body is read, so a plain GET (the hot reads) costs nothing more.
    local length = headers:get("content-length")
    if (length == nil or length == "0") and headers:get("transfer-encoding") == nil then
      return
    end
  end
  local body = handle:body()
  if body == nil or body:length() == 0 then
    return
  end
  local paths, refusal, fractions = collect(body:getBytes(0, body:length()))
  if refusal then
    handle:respond({[":status"] = "400", ["content-type"] = "text/plain"}, refusal)
    return
  end
  if paths and #paths > 0 then
    -- The headers object of before the body arrived is out of scope now.
    handle:headers():add(HEADER, table.concat(paths, ","))
  end
  if fractions and fractions ~= "" then
    handle:headers():add(FRACTIONS, fractions)
  end
end

-- A field the server names in `x-billing-json-null` (response metadata) is printed as
-- `null` when the answer leaves it out: proto3 JSON omits an unset message field, where a
-- seed's body shows `null` (seed 003's "Returns subscription: null"). Only answers that
-- carry the header are read; every other answer passes untouched.
NULLS = "x-billing-json-null"

function envoy_on_response(handle)
  local headers = handle:headers()
  local nulls = headers:get(NULLS)
  if nulls == nil then
    return
  end
  headers:remove(NULLS)
  local kind = headers:get("content-type") or ""
  if headers:get(":status") ~= "200" or kind:find("application/json", 1, true) ~= 1 then
    return
  end
  local body = handle:body()
  local text = body and body:getBytes(0, body:length()) or ""
  if text:sub(1, 1) ~= "{" then
    return
  end
  local added, changed = {}, false
  for name in nulls:gmatch("[%w_]+") do
    local key = '"' .. name .. '":'
    local at = text:find(key, 1, true)
    if not at then
      added[#added + 1] = key .. "null"
    elseif not text:find(key, at + #key, true) then
      -- A field with no presence (a bool, a number) that the transcoder printed with its
      -- default value: the server named it, so its value is null. Only a lone literal key
      -- (an escaped key inside a string never matches `"name":`) with a true/false/number
      -- value is replaced; anything else is left as printed.
      local from = at + #key
      local value = text:match("^true", from) or text:match("^false", from)
        or text:match("^%-?%d[%d%.eE%+%-]*", from)
      if value then
        text = text:sub(1, from - 1) .. "null" .. text:sub(from + #value)
        changed = true
      end
    end
  end
  if #added == 0 then
    if changed then
      body:setBytes(text)
    end
    return
  end
  local rest = text:sub(2)
  local sep = rest:find("^%s*}") and "" or ","
  body:setBytes("{" .. table.concat(added, ",") .. sep .. rest)
end
