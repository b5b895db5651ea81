//! A pickle reader for the subset of the format that `torch.save` writes.
//!
//! It never executes anything: globals are kept as names, and only the few reconstruction
//! functions a state dict uses (`OrderedDict`, `_rebuild_tensor_v2`, `_rebuild_parameter`) are
//! interpreted; every other call is kept as an opaque [`Value::Call`].
use std::collections::HashMap;

/// Where a tensor's bytes live and how to view them.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// The storage key (a file name in the zip's `data/` folder, or a legacy storage key).
    pub storage_key: String,
    /// Element type, from the storage class name.
    pub dtype: DType,
    /// Number of elements in the storage, when the persistent id records it.
    pub storage_numel: Option<u64>,
    /// Offset into the storage, in elements.
    pub offset: i64,
    /// Shape.
    pub size: Vec<i64>,
    /// Strides, in elements.
    pub stride: Vec<i64>,
}

/// Element types that PyTorch storages use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// float32
    F32,
    /// float64
    F64,
    /// float16
    F16,
    /// bfloat16
    BF16,
    /// int64
    I64,
    /// int32
    I32,
    /// int16
    I16,
    /// int8
    I8,
    /// uint8
    U8,
    /// bool
    Bool,
}

impl DType {
    /// From a storage class name (`FloatStorage`) or a dtype name (`float32`).
    pub fn from_name(name: &str) -> Option<DType> {
        Some(match name {
            "FloatStorage" | "float32" | "float" => DType::F32,
            "DoubleStorage" | "float64" | "double" => DType::F64,
            "HalfStorage" | "float16" | "half" => DType::F16,
            "BFloat16Storage" | "bfloat16" => DType::BF16,
            "LongStorage" | "int64" | "long" => DType::I64,
            "IntStorage" | "int32" | "int" => DType::I32,
            "ShortStorage" | "int16" | "short" => DType::I16,
            "CharStorage" | "int8" => DType::I8,
            "ByteStorage" | "uint8" => DType::U8,
            "BoolStorage" | "bool" => DType::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// The matching tch kind.
    pub fn kind(self) -> tch::Kind {
        match self {
            DType::F32 => tch::Kind::Float,
            DType::F64 => tch::Kind::Double,
            DType::F16 => tch::Kind::Half,
            DType::BF16 => tch::Kind::BFloat16,
            DType::I64 => tch::Kind::Int64,
            DType::I32 => tch::Kind::Int,
            DType::I16 => tch::Kind::Int16,
            DType::I8 => tch::Kind::Int8,
            DType::U8 => tch::Kind::Uint8,
            DType::Bool => tch::Kind::Bool,
        }
    }
}

/// A decoded pickle value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`
    None,
    /// `True` / `False`
    Bool(bool),
    /// An integer that fits 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A bytes object.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<Value>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A dict or OrderedDict, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A global name (`module.name`), not resolved.
    Global(String, String),
    /// A persistent id (storage reference) as `torch.save` writes it.
    PersistentId(Box<Value>),
    /// A tensor rebuilt from a storage.
    Tensor(TensorRef),
    /// A call of an unknown global, kept opaque.
    Call(Box<Value>, Box<Value>),
    /// An object with the state BUILD gave it.
    Built(Box<Value>, Box<Value>),
}

impl Value {
    /// The value of `key` in a dict whose keys are strings (text or, from Python 2, bytes).
    pub fn get(&self, key: &str) -> Option<&Value> {
        let Value::Dict(items) = self else {
            return None;
        };
        items.iter().find_map(|(k, v)| match k {
            Value::Str(s) if s == key => Some(v),
            Value::Bytes(b) if b == key.as_bytes() => Some(v),
            _ => None,
        })
    }

    /// The bytes of a bytes object, or of a Python 2 string (decoded as latin-1).
    pub fn as_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Value::Bytes(b) => Some(b.clone()),
            Value::Str(s) => s.chars().map(|c| u8::try_from(c as u32).ok()).collect(),
            _ => None,
        }
    }

    /// A numpy array pickled by `ndarray.__reduce__`: `(shape, dtype name, raw bytes)`.
    pub fn as_ndarray(&self) -> Option<(Vec<i64>, String, Vec<u8>)> {
        let Value::Built(obj, state) = self else {
            return None;
        };
        let Value::Call(func, _) = obj.as_ref() else {
            return None;
        };
        if !matches!(func.as_ref(), Value::Global(_, name) if name == "_reconstruct") {
            return None;
        }
        // state = (version, shape, dtype, is_fortran, raw)
        let Value::Tuple(items) = state.as_ref() else {
            return None;
        };
        let [_, Value::Tuple(shape), dtype, Value::Bool(false), raw] = items.as_slice() else {
            return None;
        };
        let shape = shape
            .iter()
            .map(|v| match v {
                Value::Int(i) => Some(*i),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        // dtype = Built(Call(numpy.dtype, ("u1", 0, 1)), state)
        let dtype = match dtype {
            Value::Built(call, _) => match call.as_ref() {
                Value::Call(_, args) => match args.as_ref() {
                    Value::Tuple(a) => a.first().and_then(|n| n.as_bytes()),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        }?;
        Some((
            shape,
            String::from_utf8_lossy(&dtype).into_owned(),
            raw.as_bytes()?,
        ))
    }
}

/// Why a pickle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    /// The stream ended early.
    #[error("pickle data ends unexpectedly at byte {0}")]
    Truncated(usize),
    /// An opcode this reader does not know.
    #[error("unsupported pickle opcode 0x{0:02x} at byte {1}")]
    UnsupportedOpcode(u8, usize),
    /// The pickle is structurally wrong.
    #[error("malformed pickle at byte {at}: {what}")]
    Malformed {
        /// Byte offset.
        at: usize,
        /// What was wrong.
        what: String,
    },
}

enum Item {
    Mark,
    Value(Value),
}

/// Reads one pickle starting at `data[*pos]`; on return `*pos` is just past its STOP opcode.
pub fn read(data: &[u8], pos: &mut usize) -> Result<Value, PickleError> {
    let mut stack: Vec<Item> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    loop {
        let at = *pos;
        let op = take(data, pos, 1)?[0];
        match op {
            0x80 => {
                take(data, pos, 1)?; // PROTO n
            }
            0x95 => {
                take(data, pos, 8)?; // FRAME len
            }
            b'.' => {
                return pop_value(&mut stack, at);
            }
            b'(' => stack.push(Item::Mark),
            b'N' => push(&mut stack, Value::None),
            0x88 => push(&mut stack, Value::Bool(true)),
            0x89 => push(&mut stack, Value::Bool(false)),
            b'}' => push(&mut stack, Value::Dict(Vec::new())),
            b']' => push(&mut stack, Value::List(Vec::new())),
            b')' => push(&mut stack, Value::Tuple(Vec::new())),
            b'J' => {
                let b = take(data, pos, 4)?;
                push(&mut stack, Value::Int(i32::from_le_bytes(arr(b)) as i64));
            }
            b'K' => {
                let b = take(data, pos, 1)?;
                push(&mut stack, Value::Int(b[0] as i64));
            }
            b'M' => {
                let b = take(data, pos, 2)?;
                push(&mut stack, Value::Int(u16::from_le_bytes(arr(b)) as i64));
            }
            0x8a => {
                let n = take(data, pos, 1)?[0] as usize;
                let b = take(data, pos, n)?;
                // Integers wider than 64 bits (the legacy format's magic number) stay raw.
                let v = if n > 8 {
                    Value::Bytes(b.to_vec())
                } else {
                    Value::Int(long_le(b))
                };
                push(&mut stack, v);
            }
            b'G' => {
                let b = take(data, pos, 8)?;
                push(&mut stack, Value::Float(f64::from_be_bytes(arr(b))));
            }
            b'X' => {
                let n = u32::from_le_bytes(arr(take(data, pos, 4)?)) as usize;
                push(&mut stack, Value::Str(utf8(take(data, pos, n)?, at)?));
            }
            0x8c => {
                let n = take(data, pos, 1)?[0] as usize;
                push(&mut stack, Value::Str(utf8(take(data, pos, n)?, at)?));
            }
            0x8d => {
                let n = u64::from_le_bytes(arr(take(data, pos, 8)?)) as usize;
                push(&mut stack, Value::Str(utf8(take(data, pos, n)?, at)?));
            }
            b'T' => {
                let n = u32::from_le_bytes(arr(take(data, pos, 4)?)) as usize;
                push(&mut stack, Value::Str(latin1(take(data, pos, n)?)));
            }
            b'U' => {
                let n = take(data, pos, 1)?[0] as usize;
                push(&mut stack, Value::Str(latin1(take(data, pos, n)?)));
            }
            b'B' => {
                let n = u32::from_le_bytes(arr(take(data, pos, 4)?)) as usize;
                push(&mut stack, Value::Bytes(take(data, pos, n)?.to_vec()));
            }
            b'C' => {
                let n = take(data, pos, 1)?[0] as usize;
                push(&mut stack, Value::Bytes(take(data, pos, n)?.to_vec()));
            }
            b'c' => {
                let module = line(data, pos)?;
                let name = line(data, pos)?;
                push(&mut stack, Value::Global(module, name));
            }
            0x93 => {
                let name = pop_value(&mut stack, at)?;
                let module = pop_value(&mut stack, at)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => push(&mut stack, Value::Global(m, n)),
                    _ => return Err(malformed(at, "STACK_GLOBAL needs two strings")),
                }
            }
            b'q' => {
                let k = take(data, pos, 1)?[0] as u32;
                memo.insert(k, top(&stack, at)?.clone());
            }
            b'r' => {
                let k = u32::from_le_bytes(arr(take(data, pos, 4)?));
                memo.insert(k, top(&stack, at)?.clone());
            }
            0x94 => {
                let k = memo.len() as u32;
                memo.insert(k, top(&stack, at)?.clone());
            }
            b'h' => {
                let k = take(data, pos, 1)?[0] as u32;
                push(&mut stack, memo_get(&memo, k, at)?);
            }
            b'j' => {
                let k = u32::from_le_bytes(arr(take(data, pos, 4)?));
                push(&mut stack, memo_get(&memo, k, at)?);
            }
            b't' => {
                let items = pop_mark(&mut stack, at)?;
                push(&mut stack, Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(pop_value(&mut stack, at)?);
                }
                items.reverse();
                push(&mut stack, Value::Tuple(items));
            }
            b'l' => {
                let items = pop_mark(&mut stack, at)?;
                push(&mut stack, Value::List(items));
            }
            b'd' => {
                let items = pop_mark(&mut stack, at)?;
                push(&mut stack, Value::Dict(pairs(items, at)?));
            }
            b'a' => {
                let v = pop_value(&mut stack, at)?;
                match top_mut(&mut stack, at)? {
                    Value::List(l) => l.push(v),
                    _ => return Err(malformed(at, "APPEND to a non-list")),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack, at)?;
                match top_mut(&mut stack, at)? {
                    Value::List(l) => l.extend(items),
                    _ => return Err(malformed(at, "APPENDS to a non-list")),
                }
            }
            b's' => {
                let v = pop_value(&mut stack, at)?;
                let k = pop_value(&mut stack, at)?;
                match top_mut(&mut stack, at)? {
                    Value::Dict(d) => d.push((k, v)),
                    _ => return Err(malformed(at, "SETITEM on a non-dict")),
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack, at)?;
                let new = pairs(items, at)?;
                match top_mut(&mut stack, at)? {
                    Value::Dict(d) => d.extend(new),
                    _ => return Err(malformed(at, "SETITEMS on a non-dict")),
                }
            }
            b'Q' => {
                let pid = pop_value(&mut stack, at)?;
                push(&mut stack, Value::PersistentId(Box::new(pid)));
            }
            b'R' => {
                let args = pop_value(&mut stack, at)?;
                let func = pop_value(&mut stack, at)?;
                push(&mut stack, reduce(func, args, at)?);
            }
            0x81 => {
                let args = pop_value(&mut stack, at)?;
                let cls = pop_value(&mut stack, at)?;
                push(&mut stack, reduce(cls, args, at)?);
            }
            b'b' => {
                // BUILD: a dict's state (an OrderedDict's `_metadata`) is not needed; any other
                // object keeps its state (a numpy array's shape, dtype and bytes).
                let state = pop_value(&mut stack, at)?;
                let obj = top_mut(&mut stack, at)?;
                if !matches!(obj, Value::Dict(_)) {
                    let inner = std::mem::replace(obj, Value::None);
                    *obj = Value::Built(Box::new(inner), Box::new(state));
                }
            }
            other => return Err(PickleError::UnsupportedOpcode(other, at)),
        }
    }
}

fn reduce(func: Value, args: Value, at: usize) -> Result<Value, PickleError> {
    let Value::Global(module, name) = &func else {
        return Ok(Value::Call(Box::new(func), Box::new(args)));
    };
    let args_list = match &args {
        Value::Tuple(a) => a.as_slice(),
        _ => &[],
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict") => {
            Ok(Value::Dict(Vec::new()))
        }
        // Python 3 pickles bytes under protocol 2 as `_codecs.encode(text, "latin1")`.
        ("_codecs", "encode") => match args_list {
            [Value::Str(text), Value::Str(enc)] if enc == "latin1" || enc == "latin-1" => text
                .chars()
                .map(|c| u8::try_from(c as u32).ok())
                .collect::<Option<Vec<u8>>>()
                .map(Value::Bytes)
                .ok_or_else(|| malformed(at, "latin-1 text outside latin-1")),
            _ => Ok(Value::Call(Box::new(func), Box::new(args))),
        },
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            rebuild_tensor(args_list, at)
        }
        ("torch._utils", "_rebuild_parameter")
        | ("torch._utils", "_rebuild_parameter_with_state") => args_list
            .first()
            .cloned()
            .ok_or_else(|| malformed(at, "_rebuild_parameter without data")),
        _ => Ok(Value::Call(Box::new(func), Box::new(args))),
    }
}

fn rebuild_tensor(args: &[Value], at: usize) -> Result<Value, PickleError> {
    let [storage, offset, size, stride, ..] = args else {
        return Err(malformed(
            at,
            "_rebuild_tensor_v2 needs storage, offset, size, stride",
        ));
    };
    let Value::PersistentId(pid) = storage else {
        return Err(malformed(at, "tensor storage is not a persistent id"));
    };
    let Value::Tuple(pid) = pid.as_ref() else {
        return Err(malformed(at, "persistent id is not a tuple"));
    };
    // ('storage', storage_type, key, location, numel[, view_metadata])
    let (storage_type, key, numel) = match pid.as_slice() {
        [Value::Str(tag), ty, key, _location, numel, ..] if tag == "storage" => (ty, key, numel),
        _ => return Err(malformed(at, "unexpected storage persistent id")),
    };
    let dtype = match storage_type {
        Value::Global(_, name) => DType::from_name(name),
        Value::Str(name) => DType::from_name(name),
        _ => None,
    }
    .ok_or_else(|| malformed(at, format!("unsupported storage type {storage_type:?}")))?;
    let storage_key = match key {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => return Err(malformed(at, format!("bad storage key {other:?}"))),
    };
    let storage_numel = match numel {
        Value::Int(n) if *n >= 0 => Some(*n as u64),
        _ => None,
    };
    Ok(Value::Tensor(TensorRef {
        storage_key,
        dtype,
        storage_numel,
        offset: int(offset, at)?,
        size: ints(size, at)?,
        stride: ints(stride, at)?,
    }))
}

fn int(v: &Value, at: usize) -> Result<i64, PickleError> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(malformed(
            at,
            format!("expected an integer, found {other:?}"),
        )),
    }
}

fn ints(v: &Value, at: usize) -> Result<Vec<i64>, PickleError> {
    match v {
        Value::Tuple(items) | Value::List(items) => items.iter().map(|i| int(i, at)).collect(),
        other => Err(malformed(
            at,
            format!("expected a tuple of integers, found {other:?}"),
        )),
    }
}

fn malformed(at: usize, what: impl Into<String>) -> PickleError {
    PickleError::Malformed {
        at,
        what: what.into(),
    }
}

fn take<'a>(data: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], PickleError> {
    let end = pos.checked_add(n).ok_or(PickleError::Truncated(*pos))?;
    let slice = data.get(*pos..end).ok_or(PickleError::Truncated(*pos))?;
    *pos = end;
    Ok(slice)
}

fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[..N]);
    out
}

fn line(data: &[u8], pos: &mut usize) -> Result<String, PickleError> {
    let start = *pos;
    let rest = data.get(start..).ok_or(PickleError::Truncated(start))?;
    let n = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(PickleError::Truncated(start))?;
    *pos = start + n + 1;
    Ok(latin1(&rest[..n]))
}

fn long_le(b: &[u8]) -> i64 {
    let Some(last) = b.last() else { return 0 };
    let mut buf = if last & 0x80 != 0 {
        [0xffu8; 8]
    } else {
        [0u8; 8]
    };
    buf[..b.len()].copy_from_slice(b);
    i64::from_le_bytes(buf)
}

fn utf8(b: &[u8], at: usize) -> Result<String, PickleError> {
    String::from_utf8(b.to_vec()).map_err(|_| malformed(at, "string is not UTF-8"))
}

fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

fn push(stack: &mut Vec<Item>, v: Value) {
    stack.push(Item::Value(v));
}

fn pop_value(stack: &mut Vec<Item>, at: usize) -> Result<Value, PickleError> {
    match stack.pop() {
        Some(Item::Value(v)) => Ok(v),
        Some(Item::Mark) => Err(malformed(at, "unexpected MARK")),
        None => Err(malformed(at, "stack underflow")),
    }
}

fn top(stack: &[Item], at: usize) -> Result<&Value, PickleError> {
    match stack.last() {
        Some(Item::Value(v)) => Ok(v),
        _ => Err(malformed(at, "no value on the stack")),
    }
}

fn top_mut(stack: &mut [Item], at: usize) -> Result<&mut Value, PickleError> {
    match stack.last_mut() {
        Some(Item::Value(v)) => Ok(v),
        _ => Err(malformed(at, "no value on the stack")),
    }
}

fn memo_get(memo: &HashMap<u32, Value>, k: u32, at: usize) -> Result<Value, PickleError> {
    memo.get(&k)
        .cloned()
        .ok_or_else(|| malformed(at, format!("memo key {k} not set")))
}

fn pop_mark(stack: &mut Vec<Item>, at: usize) -> Result<Vec<Value>, PickleError> {
    let mut items = Vec::new();
    loop {
        match stack.pop() {
            Some(Item::Mark) => break,
            Some(Item::Value(v)) => items.push(v),
            None => return Err(malformed(at, "MARK not found")),
        }
    }
    items.reverse();
    Ok(items)
}

fn pairs(items: Vec<Value>, at: usize) -> Result<Vec<(Value, Value)>, PickleError> {
    if !items.len().is_multiple_of(2) {
        return Err(malformed(at, "odd number of dict items"));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_small_values() {
        // pickle.dumps({'a': [1, 2.5, None, True], 'b': (300, -1)}, protocol=2)
        let data: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00N\x88eX\x01\x00\x00\x00bq\x03M,\x01J\xff\xff\xff\xff\x86q\x04u.";
        let mut pos = 0;
        let v = read(data, &mut pos).expect("valid pickle");
        assert_eq!(pos, data.len());
        assert_eq!(
            v,
            Value::Dict(vec![
                (
                    Value::Str("a".into()),
                    Value::List(vec![
                        Value::Int(1),
                        Value::Float(2.5),
                        Value::None,
                        Value::Bool(true)
                    ])
                ),
                (
                    Value::Str("b".into()),
                    Value::Tuple(vec![Value::Int(300), Value::Int(-1)])
                ),
            ])
        );
    }

    #[test]
    fn truncated_is_an_error() {
        let data: &[u8] = b"\x80\x02}q\x00(X\x05\x00\x00\x00ab";
        let mut pos = 0;
        assert!(matches!(
            read(data, &mut pos),
            Err(PickleError::Truncated(_))
        ));
    }
}

/// Serialises a value as a protocol-3 pickle (no memo). Used to write fixtures in the formats
/// Python programs read, such as CIFAR's pickled dicts of numpy arrays.
pub fn dumps(v: &Value) -> Vec<u8> {
    let mut out = vec![0x80, 3];
    dump(v, &mut out);
    out.push(b'.');
    out
}

fn dump(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::None => out.push(b'N'),
        Value::Bool(b) => out.push(if *b { 0x88 } else { 0x89 }),
        Value::Int(i) => match *i {
            0..=0xff => out.extend([b'K', *i as u8]),
            0x100..=0xffff => {
                out.push(b'M');
                out.extend((*i as u16).to_le_bytes());
            }
            _ if i32::try_from(*i).is_ok() => {
                out.push(b'J');
                out.extend((*i as i32).to_le_bytes());
            }
            _ => {
                out.extend([0x8a, 8]);
                out.extend(i.to_le_bytes());
            }
        },
        Value::Float(f) => {
            out.push(b'G');
            out.extend(f.to_be_bytes());
        }
        Value::Str(s) => {
            out.push(b'X');
            out.extend((s.len() as u32).to_le_bytes());
            out.extend(s.as_bytes());
        }
        Value::Bytes(b) => {
            out.push(b'B');
            out.extend((b.len() as u32).to_le_bytes());
            out.extend(b);
        }
        Value::List(items) => {
            out.push(b']');
            if !items.is_empty() {
                out.push(b'(');
                items.iter().for_each(|i| dump(i, out));
                out.push(b'e');
            }
        }
        Value::Tuple(items) => {
            out.push(b'(');
            items.iter().for_each(|i| dump(i, out));
            out.push(b't');
        }
        Value::Dict(items) => {
            out.push(b'}');
            if !items.is_empty() {
                out.push(b'(');
                for (k, v) in items {
                    dump(k, out);
                    dump(v, out);
                }
                out.push(b'u');
            }
        }
        Value::Global(m, n) => {
            out.push(b'c');
            out.extend(m.as_bytes());
            out.push(b'\n');
            out.extend(n.as_bytes());
            out.push(b'\n');
        }
        Value::Call(f, args) => {
            dump(f, out);
            dump(args, out);
            out.push(b'R');
        }
        Value::Built(obj, state) => {
            dump(obj, out);
            dump(state, out);
            out.push(b'b');
        }
        // Never produced by `read` at the top of a value a caller would write.
        Value::PersistentId(_) | Value::Tensor(_) => out.push(b'N'),
    }
}

/// A uint8 numpy array as `ndarray.__reduce__` pickles it.
pub fn ndarray_u8(shape: &[i64], data: Vec<u8>) -> Value {
    let global = |m: &str, n: &str| Value::Global(m.to_string(), n.to_string());
    let dtype = Value::Built(
        Box::new(Value::Call(
            Box::new(global("numpy", "dtype")),
            Box::new(Value::Tuple(vec![
                Value::Str("u1".into()),
                Value::Bool(false),
                Value::Bool(true),
            ])),
        )),
        Box::new(Value::Tuple(vec![
            Value::Int(3),
            Value::Str("|".into()),
            Value::None,
            Value::None,
            Value::None,
            Value::Int(-1),
            Value::Int(-1),
            Value::Int(0),
        ])),
    );
    Value::Built(
        Box::new(Value::Call(
            Box::new(global("numpy.core.multiarray", "_reconstruct")),
            Box::new(Value::Tuple(vec![
                global("numpy", "ndarray"),
                Value::Tuple(vec![Value::Int(0)]),
                Value::Bytes(b"b".to_vec()),
            ])),
        )),
        Box::new(Value::Tuple(vec![
            Value::Int(1),
            Value::Tuple(shape.iter().map(|s| Value::Int(*s)).collect()),
            dtype,
            Value::Bool(false),
            Value::Bytes(data),
        ])),
    )
}

#[cfg(test)]
mod write_tests {
    use super::*;

    #[test]
    fn dumps_round_trips_through_read() {
        let v = Value::Dict(vec![
            (
                Value::Str("data".into()),
                ndarray_u8(&[2, 3], vec![1, 2, 3, 4, 5, 6]),
            ),
            (
                Value::Str("fine_labels".into()),
                Value::List(vec![Value::Int(7), Value::Int(300)]),
            ),
        ]);
        let bytes = dumps(&v);
        let mut pos = 0;
        let back = read(&bytes, &mut pos).expect("reads back");
        let (shape, dtype, raw) = back
            .get("data")
            .and_then(Value::as_ndarray)
            .expect("ndarray");
        assert_eq!(
            (shape, dtype.as_str(), raw),
            (vec![2, 3], "u1", vec![1, 2, 3, 4, 5, 6])
        );
        assert_eq!(
            back.get("fine_labels"),
            Some(&Value::List(vec![Value::Int(7), Value::Int(300)]))
        );
    }
}
