//! `mqseal._native`: the device core (`mqseal_core::device::Device`) for
//! Python. Only translation: every decision is the core's, the same code the
//! `mqseal` CLI and the C library run. The Python-facing API, its type hints
//! and the exception class live in `python/mqseal/`.

use std::path::PathBuf;
use std::sync::Mutex;

use mqseal_core::device::{ControlOutcome, Device as CoreDevice, DeviceError};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Raises `mqseal.MqsealError(reason, message)` (defined in Python, so it is
/// an ordinary class with type hints).
fn raise(py: Python<'_>, error: DeviceError) -> PyErr {
    let reason = error.reason();
    let message = error.to_string();
    match py.import("mqseal._errors").and_then(|m| m.getattr("MqsealError")).and_then(|cls| cls.call1((reason, message.clone())))
    {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

/// A joined device directory, loaded. Thread-safe: calls are serialised by a
/// lock, so paho-mqtt's network thread may open while the main thread seals.
#[pyclass(module = "mqseal._native", frozen)]
struct Device {
    inner: Mutex<CoreDevice>,
}

/// An opened message.
#[pyclass(module = "mqseal._native", frozen, get_all)]
struct Message {
    payload: Py<PyBytes>,
    sender: String,
    group: String,
    epoch: u64,
    seq: u64,
    timestamp_ms: u64,
}

#[pymethods]
impl Message {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Message(sender={:?}, group={:?}, epoch={}, seq={}, {} bytes)",
            self.sender,
            self.group,
            self.epoch,
            self.seq,
            self.payload.bind(py).as_bytes().len()
        )
    }
}

impl Device {
    fn with<T>(&self, py: Python<'_>, f: impl FnOnce(&mut CoreDevice) -> Result<T, DeviceError>) -> PyResult<T> {
        let result = {
            let mut guard = self.inner.lock().map_err(|_| PyRuntimeError::new_err("mqseal: the device lock is poisoned"))?;
            f(&mut guard)
        };
        // The lock is released before Python runs again (raising imports a module,
        // which may let another thread take the GIL and call this device).
        result.map_err(|e| raise(py, e))
    }
}

#[pymethods]
impl Device {
    #[staticmethod]
    fn load(py: Python<'_>, dir: PathBuf) -> PyResult<Device> {
        let inner = CoreDevice::load(&dir).map_err(|e| raise(py, e))?;
        Ok(Device { inner: Mutex::new(inner) })
    }

    #[staticmethod]
    fn join(py: Python<'_>, dir: PathBuf, authority: PathBuf, policy: &[u8], bundle: &[u8]) -> PyResult<Device> {
        let inner = CoreDevice::join(&dir, &authority, policy, bundle).map_err(|e| raise(py, e))?;
        Ok(Device { inner: Mutex::new(inner) })
    }

    #[staticmethod]
    #[pyo3(signature = (dir, client_id, username=None))]
    fn join_login_token(py: Python<'_>, dir: PathBuf, client_id: &str, username: Option<&str>) -> PyResult<String> {
        CoreDevice::join_login_token(&dir, client_id, username).map_err(|e| raise(py, e))
    }

    #[getter]
    fn id(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |d| Ok(d.id().to_string()))
    }

    #[getter]
    fn username(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |d| d.username().map(str::to_string))
    }

    #[getter]
    fn policy_version(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |d| Ok(d.policy_version()))
    }

    #[getter]
    fn bundle_version(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |d| Ok(d.bundle_version()))
    }

    #[getter]
    fn control_topics(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.with(py, |d| Ok(d.control_topics()))
    }

    fn group_of_topic(&self, py: Python<'_>, topic: &str) -> PyResult<Option<String>> {
        self.with(py, |d| Ok(d.group_of_topic(topic).map(str::to_string)))
    }

    fn group_epoch(&self, py: Python<'_>, group: &str) -> PyResult<Option<u64>> {
        self.with(py, |d| Ok(d.group_epoch(group)))
    }

    fn login_token(&self, py: Python<'_>, client_id: &str) -> PyResult<String> {
        self.with(py, |d| d.login_token(client_id))
    }

    fn seal<'py>(&self, py: Python<'py>, topic: &str, plaintext: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let sealed = self.with(py, |d| d.seal(topic, plaintext))?;
        Ok(PyBytes::new(py, &sealed.envelope))
    }

    fn open(&self, py: Python<'_>, topic: &str, payload: &[u8]) -> PyResult<Message> {
        let opened = self.with(py, |d| d.open(topic, payload))?;
        Ok(Message {
            payload: PyBytes::new(py, &opened.payload).unbind(),
            sender: opened.sender,
            group: opened.group,
            epoch: opened.epoch,
            seq: opened.seq,
            timestamp_ms: opened.timestamp_ms,
        })
    }

    /// "not-control", "unchanged" or "updated".
    fn apply_control(&self, py: Python<'_>, topic: &str, payload: &[u8]) -> PyResult<&'static str> {
        self.with(py, |d| {
            Ok(match d.apply_control(topic, payload)? {
                ControlOutcome::NotControl => "not-control",
                ControlOutcome::Unchanged(_) => "unchanged",
                ControlOutcome::Updated(_) => "updated",
            })
        })
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |d| Ok(format!("Device({:?}, policy version {})", d.id(), d.policy_version())))
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Device>()?;
    m.add_class::<Message>()?;
    Ok(())
}
