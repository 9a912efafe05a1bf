#include "pyopt/json.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>

namespace pyopt {
namespace json {

void append_utf8(std::string& out, unsigned cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

const char* type_name(Value::Type t) {
  switch (t) {
    case Value::Type::Null: return "null";
    case Value::Type::Bool: return "bool";
    case Value::Type::Number: return "number";
    case Value::Type::String: return "string";
    case Value::Type::Array: return "array";
    case Value::Type::Object: return "object";
  }
  return "?";
}

namespace {
[[noreturn]] void wrong_type(const char* want, Value::Type got) {
  throw std::invalid_argument(std::string("json: expected ") + want + ", got " + (got == Value::Type::Array ? "an " : got == Value::Type::Object ? "an " : "a ") + type_name(got));
}
}  // namespace

bool Value::as_bool() const {
  if (type_ != Type::Bool) wrong_type("a bool", type_);
  return bool_;
}
double Value::as_number() const {
  if (type_ != Type::Number) wrong_type("a number", type_);
  return number_;
}
const std::string& Value::as_string() const {
  if (type_ != Type::String) wrong_type("a string", type_);
  return string_;
}
const Value::Array& Value::as_array() const {
  if (type_ != Type::Array) wrong_type("an array", type_);
  return array_;
}
Value::Array& Value::as_array() {
  if (type_ != Type::Array) wrong_type("an array", type_);
  return array_;
}
const Value::Object& Value::as_object() const {
  if (type_ != Type::Object) wrong_type("an object", type_);
  return object_;
}
Value::Object& Value::as_object() {
  if (type_ != Type::Object) wrong_type("an object", type_);
  return object_;
}

const Value* Value::find(const std::string& key) const {
  for (const auto& kv : as_object())
    if (kv.first == key) return &kv.second;
  return nullptr;
}
const Value& Value::operator[](const std::string& key) const {
  const Value* v = find(key);
  if (!v) throw std::out_of_range("json: no key \"" + key + "\"");
  return *v;
}
void Value::set(const std::string& key, Value v) {
  for (auto& kv : as_object())
    if (kv.first == key) {
      kv.second = std::move(v);
      return;
    }
  object_.emplace_back(key, std::move(v));
}
const Value& Value::operator[](std::size_t i) const {
  const Array& a = as_array();
  if (i >= a.size()) throw std::out_of_range("json: index " + std::to_string(i) + " out of range");
  return a[i];
}
std::size_t Value::size() const {
  return type_ == Type::Array ? array_.size() : type_ == Type::Object ? object_.size() : 0;
}

bool Value::operator==(const Value& o) const {
  if (type_ != o.type_) return false;
  switch (type_) {
    case Type::Null: return true;
    case Type::Bool: return bool_ == o.bool_;
    case Type::Number: return number_ == o.number_ || (std::isnan(number_) && std::isnan(o.number_));
    case Type::String: return string_ == o.string_;
    case Type::Array: return array_ == o.array_;
    case Type::Object: return object_ == o.object_;
  }
  return false;
}

// ------------------------------------------------------------------------------------------
namespace {

class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) {}

  Value document() {
    skip_ws();
    Value v = value(0);
    skip_ws();
    if (pos_ != s_.size()) error("unexpected text after the JSON value");
    return v;
  }

 private:
  const std::string& s_;
  std::size_t pos_ = 0;

  [[noreturn]] void error(const std::string& what) const {
    std::size_t line = 1, col = 1;
    for (std::size_t i = 0; i < pos_ && i < s_.size(); ++i) {
      if (s_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    throw ParseError("json: " + what + " at line " + std::to_string(line) + ", column " + std::to_string(col));
  }
  bool at_end() const { return pos_ >= s_.size(); }
  char peek() const { return at_end() ? '\0' : s_[pos_]; }
  void skip_ws() {
    while (!at_end() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  bool consume(const char* word) {
    std::size_t n = std::char_traits<char>::length(word);
    if (s_.compare(pos_, n, word) == 0) {
      pos_ += n;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (peek() != c) error(std::string("expected '") + c + "'");
    ++pos_;
  }

  Value value(int depth) {
    if (depth > 512) error("nesting too deep");
    if (at_end()) error("unexpected end of input");
    const char c = peek();
    if (c == '{') return object(depth);
    if (c == '[') return array(depth);
    if (c == '"') return Value(string());
    if (consume("true")) return Value(true);
    if (consume("false")) return Value(false);
    if (consume("null")) return Value();
    if (consume("NaN")) return Value(std::numeric_limits<double>::quiet_NaN());
    if (consume("Infinity")) return Value(std::numeric_limits<double>::infinity());
    if (consume("-Infinity")) return Value(-std::numeric_limits<double>::infinity());
    if (c == '-' || (c >= '0' && c <= '9')) return Value(number());
    error(std::string("unexpected character '") + c + "'");
  }

  Value object(int depth) {
    expect('{');
    Value out = Value::object();
    skip_ws();
    if (peek() == '}') {
      ++pos_;
      return out;
    }
    for (;;) {
      skip_ws();
      if (peek() != '"') error("expected a string key");
      std::string key = string();
      skip_ws();
      expect(':');
      skip_ws();
      out.set(key, value(depth + 1));
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        return out;
      }
      error("expected ',' or '}' in an object");
    }
  }

  Value array(int depth) {
    expect('[');
    Value::Array out;
    skip_ws();
    if (peek() == ']') {
      ++pos_;
      return Value(std::move(out));
    }
    for (;;) {
      skip_ws();
      out.push_back(value(depth + 1));
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        return Value(std::move(out));
      }
      error("expected ',' or ']' in an array");
    }
  }

  double number() {
    const std::size_t start = pos_;
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
    } else if (peek() >= '1' && peek() <= '9') {
      while (peek() >= '0' && peek() <= '9') ++pos_;
    } else {
      error("invalid number");
    }
    if (peek() == '.') {
      ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) error("invalid number: digits expected after '.'");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) error("invalid number: digits expected in the exponent");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    const std::string text = s_.substr(start, pos_ - start);
    // strtod is locale-dependent for the decimal point; JSON numbers always use '.'.
    std::istringstream is(text);
    is.imbue(std::locale::classic());
    double x = 0.0;
    is >> x;
    if (is.fail()) {  // out of range: strtod semantics (inf / 0) as Python's float()
      x = std::strtod(text.c_str(), nullptr);
    }
    return x;
  }

  unsigned hex4() {
    if (pos_ + 4 > s_.size()) error("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') v |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= unsigned(c - 'A' + 10);
      else error("invalid \\u escape");
    }
    return v;
  }

  std::string string() {
    expect('"');
    std::string out;
    for (;;) {
      if (at_end()) error("unterminated string");
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) {
        --pos_;
        error("control character in a string");
      }
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_end()) error("unterminated string");
      const char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && s_.compare(pos_, 2, "\\u") == 0) {
            const std::size_t save = pos_;
            pos_ += 2;
            const unsigned lo = hex4();
            if (lo >= 0xDC00 && lo < 0xE000)
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            else
              pos_ = save;  // a lone high surrogate: kept as is (as Python does)
          }
          append_utf8(out, cp);
          break;
        }
        default:
          --pos_;
          error(std::string("invalid escape '\\") + e + "'");
      }
    }
  }
};

void dump_string(std::string& out, const std::string& s) {
  out += '"';
  for (std::size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    char buf[16];
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (c < 0x20) {
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else if (c < 0x80) {
      out += char(c);
    } else {  // UTF-8 sequence -> \uXXXX (surrogate pairs above the BMP)
      unsigned cp = 0;
      int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
      cp = extra == 3 ? (c & 0x07) : extra == 2 ? (c & 0x0F) : extra == 1 ? (c & 0x1F) : 0xFFFD;
      for (int k = 0; k < extra; ++k) {
        if (i + 1 >= s.size() || (static_cast<unsigned char>(s[i + 1]) & 0xC0) != 0x80) {
          cp = 0xFFFD;
          break;
        }
        cp = (cp << 6) | (static_cast<unsigned char>(s[++i]) & 0x3F);
      }
      // Overlong forms and values past U+10FFFF are not UTF-8 either: an overlong '^' written
      // as \u005e would read back as '^' and dump differently the second time.
      static const unsigned lowest[4] = {0, 0x80, 0x800, 0x10000};
      if (cp < lowest[extra] || cp > 0x10FFFF) cp = 0xFFFD;
      if (cp >= 0x10000) {
        cp -= 0x10000;
        std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
      } else {
        std::snprintf(buf, sizeof buf, "\\u%04x", cp);
      }
      out += buf;
    }
  }
  out += '"';
}

void dump_number(std::string& out, double x) {
  if (std::isnan(x)) {
    out += "NaN";
    return;
  }
  if (std::isinf(x)) {
    out += x > 0 ? "Infinity" : "-Infinity";
    return;
  }
  char buf[40];
  if (x == std::floor(x) && std::fabs(x) < 9007199254740992.0) {
    std::snprintf(buf, sizeof buf, "%.0f", x);
    if (x == 0.0 && std::signbit(x)) std::snprintf(buf, sizeof buf, "-0.0");
    out += buf;
    return;
  }
  // The shortest of 15, 16, 17 significant digits that reads back as the same double.
  for (int digits = 15; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  out += buf;
}

void dump_value(std::string& out, const Value& v) {
  switch (v.type()) {
    case Value::Type::Null: out += "null"; return;
    case Value::Type::Bool: out += v.as_bool() ? "true" : "false"; return;
    case Value::Type::Number: dump_number(out, v.as_number()); return;
    case Value::Type::String: dump_string(out, v.as_string()); return;
    case Value::Type::Array: {
      out += '[';
      bool first = true;
      for (const Value& e : v.as_array()) {
        if (!first) out += ", ";
        first = false;
        dump_value(out, e);
      }
      out += ']';
      return;
    }
    case Value::Type::Object: {
      out += '{';
      bool first = true;
      for (const auto& kv : v.as_object()) {
        if (!first) out += ", ";
        first = false;
        dump_string(out, kv.first);
        out += ": ";
        dump_value(out, kv.second);
      }
      out += '}';
      return;
    }
  }
}

}  // namespace

Value parse(const std::string& text) { return Parser(text).document(); }

Value parse_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  try {
    return parse(ss.str());
  } catch (const ParseError& e) {
    throw ParseError(path + ": " + e.what());
  }
}

std::string dump(const Value& v) {
  std::string out;
  dump_value(out, v);
  return out;
}

}  // namespace json
}  // namespace pyopt
