namespace Colo.Vm;

/// <summary>QEMU answered a QMP command with <c>{"error": {"class": ..., "desc": ...}}</c> (QEMU QMP specification).</summary>
public sealed class QmpErrorException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="command">The QMP command that failed.</param>
    /// <param name="errorClass">QMP error class, e.g. <c>GenericError</c>, <c>CommandNotFound</c>.</param>
    /// <param name="description">Human-readable description from QEMU.</param>
    public QmpErrorException(string command, string errorClass, string description)
        : base($"QMP command '{command}' failed: {errorClass}: {description}")
    {
        Command = command;
        ErrorClass = errorClass;
        Description = description;
    }

    /// <summary>The QMP command that failed.</summary>
    public string Command { get; }

    /// <summary>QMP error class, e.g. <c>GenericError</c>, <c>CommandNotFound</c>, <c>DeviceNotFound</c>.</summary>
    public string ErrorClass { get; }

    /// <summary>Human-readable error description from QEMU.</summary>
    public string Description { get; }
}

/// <summary>
/// The QMP connection is closed (QEMU exited, the socket broke, or the client was disposed). Every command pending
/// at that moment, and every later one, fails with this exception.
/// </summary>
public sealed class QmpDisconnectedException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">Why the connection closed.</param>
    /// <param name="inner">The socket error that closed it, if any.</param>
    public QmpDisconnectedException(string message, Exception? inner = null)
        : base(message, inner)
    {
    }
}

/// <summary>QEMU could not be started: it exited during start-up, or QMP did not come up in time.</summary>
public sealed class QemuStartException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What failed.</param>
    /// <param name="exitCode">QEMU's exit code when it exited, else null.</param>
    /// <param name="stderrTail">Last lines QEMU wrote to stderr (may be empty).</param>
    /// <param name="inner">Underlying error, if any.</param>
    public QemuStartException(string message, int? exitCode, string stderrTail, Exception? inner = null)
        : base(stderrTail.Length == 0 ? message : $"{message}{Environment.NewLine}QEMU stderr:{Environment.NewLine}{stderrTail}", inner)
    {
        ExitCode = exitCode;
        StderrTail = stderrTail;
    }

    /// <summary>QEMU's exit code when it exited during start-up; null when it was still running (e.g. QMP timeout).</summary>
    public int? ExitCode { get; }

    /// <summary>The last lines QEMU wrote to stderr (bounded, may be empty).</summary>
    public string StderrTail { get; }
}

/// <summary>The step of a device-state capture or load that failed (<see cref="DeviceStateException.Step"/>).</summary>
public enum DeviceStateStep
{
    /// <summary>Setting the migration capabilities (<c>migrate-set-capabilities</c>).</summary>
    SetCapabilities,

    /// <summary>Creating or connecting the unix socket carrying the stream.</summary>
    Socket,

    /// <summary>Issuing <c>migrate</c> or <c>migrate-incoming</c>.</summary>
    Start,

    /// <summary>Transferring the stream over the socket.</summary>
    Transfer,

    /// <summary>Waiting for migration status <c>completed</c>.</summary>
    Completion,
}

/// <summary>Capturing or loading device state failed; <see cref="Step"/> says where.</summary>
public sealed class DeviceStateException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="step">Which step failed.</param>
    /// <param name="message">What failed.</param>
    /// <param name="inner">Underlying error (QMP error, timeout, socket error), if any.</param>
    public DeviceStateException(DeviceStateStep step, string message, Exception? inner = null)
        : base($"{step}: {message}", inner)
    {
        Step = step;
    }

    /// <summary>The step that failed.</summary>
    public DeviceStateStep Step { get; }
}
