using System.Buffers;
using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text.Json;
using Colo.Vm.Internal;
using Microsoft.Extensions.Logging;

namespace Colo.Vm;

/// <summary>
/// Asynchronous client for the QEMU Machine Protocol over a unix socket (QEMU QMP specification,
/// docs/interop/qmp-spec). One reader loop dispatches replies (matched by <c>id</c>) and events; writes are
/// serialised. Commands may be issued concurrently from any thread.
/// </summary>
/// <remarks>
/// When the connection closes, every pending command fails at once with <see cref="QmpDisconnectedException"/>,
/// later commands fail immediately with it, and <see cref="Completion"/> completes.
/// </remarks>
public sealed class QmpClient : IAsyncDisposable
{
    /// <summary>Default per-command timeout of <see cref="ExecuteAsync"/>: 10 seconds.</summary>
    public static readonly TimeSpan DefaultCommandTimeout = TimeSpan.FromSeconds(10);

    private const int InitialReadBufferBytes = 16 * 1024;
    private const int MaxMessageBytes = 64 * 1024 * 1024;

    private readonly Socket _socket;
    private readonly ILogger _logger;
    private readonly string _socketPath;
    private readonly ConcurrentDictionary<long, Pending> _pending = new();
    private readonly List<EventWaiter> _eventWaiters = [];
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly ArrayBufferWriter<byte> _writeBuffer = new(1024);
    private readonly Utf8JsonWriter _jsonWriter;
    private readonly TaskCompletionSource<JsonElement> _greeting = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _readerCts = new();
    private Task _readerTask = Task.CompletedTask;
    private long _nextId;
    private volatile QmpDisconnectedException? _closedReason;
    private int _disposed;

    private QmpClient(Socket socket, string socketPath, ILogger logger)
    {
        _socket = socket;
        _socketPath = socketPath;
        _logger = logger;
        _jsonWriter = new Utf8JsonWriter(_writeBuffer, new JsonWriterOptions { SkipValidation = true });
    }

    /// <summary>
    /// Raised on the reader loop for every QMP event. Handlers must be quick and must not block; exceptions they
    /// throw are logged and swallowed.
    /// </summary>
    public event Action<QmpEvent>? EventReceived;

    /// <summary>Completes (never faults) when the connection has closed for any reason.</summary>
    public Task Completion => _completion.Task;

    /// <summary>True until the connection closes.</summary>
    public bool IsConnected => _closedReason is null;

    /// <summary>The greeting's <c>QMP</c> object (version and capabilities), as sent by QEMU on connect.</summary>
    public JsonElement Greeting { get; private set; }

    /// <summary>
    /// Connects to a QMP unix socket, retrying every 20 ms while the socket file is missing or refuses connections,
    /// reads the greeting and sends <c>qmp_capabilities</c> to enter command mode.
    /// </summary>
    /// <param name="socketPath">Path of QEMU's QMP unix socket (<c>-qmp unix:PATH,server=on</c>).</param>
    /// <param name="timeout">Overall limit for connecting, the greeting and capability negotiation.</param>
    /// <param name="logger">Logger for protocol diagnostics.</param>
    /// <param name="cancellationToken">Cancels the attempt.</param>
    /// <returns>A connected client in command mode.</returns>
    /// <exception cref="TimeoutException">Not connected and negotiated within <paramref name="timeout"/>.</exception>
    /// <exception cref="QmpDisconnectedException">The peer closed the connection during the handshake.</exception>
    /// <exception cref="QmpErrorException">QEMU rejected <c>qmp_capabilities</c>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public static async Task<QmpClient> ConnectAsync(string socketPath, TimeSpan timeout, ILogger logger, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(socketPath);
        ArgumentNullException.ThrowIfNull(logger);
        long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        UnixDomainSocketEndPoint endPoint = new(socketPath);
        Socket? socket = null;
        int attempts = 0;
        while (socket is null)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Socket s = new(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                attempts++;
                await s.ConnectAsync(endPoint, cancellationToken).ConfigureAwait(false);
                socket = s;
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.AddressNotAvailable or SocketError.ConnectionRefused
                                                 or SocketError.AddressFamilyNotSupported or SocketError.InvalidArgument
                                                 || !File.Exists(socketPath))
            {
                s.Dispose();
                if (Environment.TickCount64 >= deadline)
                {
                    throw new TimeoutException($"QMP socket '{socketPath}' did not accept a connection within {timeout.TotalMilliseconds:F0} ms ({attempts} attempts; last error: {e.SocketErrorCode}).");
                }

                await Task.Delay(20, cancellationToken).ConfigureAwait(false);
            }
            catch
            {
                s.Dispose();
                throw;
            }
        }

        QmpClient client = new(socket, socketPath, logger);
        client._readerTask = client.ReadLoopAsync();
        try
        {
            TimeSpan remaining = TimeSpan.FromMilliseconds(Math.Max(1, deadline - Environment.TickCount64));
            Task<JsonElement> greeting = client._greeting.Task;
            try
            {
                client.Greeting = await greeting.WaitAsync(remaining, cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                throw new TimeoutException($"No QMP greeting on '{socketPath}' within {timeout.TotalMilliseconds:F0} ms.");
            }

            remaining = TimeSpan.FromMilliseconds(Math.Max(1, deadline - Environment.TickCount64));
            await client.ExecuteAsync("qmp_capabilities", null, remaining, cancellationToken).ConfigureAwait(false);
            Log.QmpConnected(logger, socketPath, attempts);
            return client;
        }
        catch
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Sends a QMP command and waits for its reply, matched by a unique numeric <c>id</c>.
    /// </summary>
    /// <param name="command">QMP command name, e.g. <c>stop</c>, <c>query-status</c>.</param>
    /// <param name="arguments">The <c>arguments</c> object, serialised with System.Text.Json (anonymous objects,
    /// dictionaries, <see cref="JsonElement"/> all work); null (default) sends no arguments.</param>
    /// <param name="timeout">How long to wait for the reply. Default <see cref="DefaultCommandTimeout"/> (10 s);
    /// <see cref="Timeout.InfiniteTimeSpan"/> waits forever. A late reply after a timeout is discarded.</param>
    /// <param name="cancellationToken">Cancels the wait (the command may still execute in QEMU).</param>
    /// <returns>The <c>return</c> member (an independent clone, safe to keep).</returns>
    /// <exception cref="QmpErrorException">QEMU replied with an error.</exception>
    /// <exception cref="TimeoutException">No reply within <paramref name="timeout"/>.</exception>
    /// <exception cref="QmpDisconnectedException">The connection is or became closed.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public async Task<JsonElement> ExecuteAsync(string command, object? arguments = null, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(command);
        ThrowIfClosed();

        long id = Interlocked.Increment(ref _nextId);
        Pending pending = new(command);
        _pending[id] = pending;
        if (_closedReason is { } closed)
        {
            _pending.TryRemove(id, out _);
            throw closed;
        }

        try
        {
            await SendAsync(id, command, arguments, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException)
        {
            _pending.TryRemove(id, out _);
            throw _closedReason ?? new QmpDisconnectedException($"QMP connection '{_socketPath}' broke while sending '{command}'.", e);
        }
        catch
        {
            _pending.TryRemove(id, out _);
            throw;
        }

        TimeSpan t = timeout ?? DefaultCommandTimeout;
        try
        {
            return await pending.Task.WaitAsync(t, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            _pending.TryRemove(id, out _);
            throw new TimeoutException($"QMP command '{command}' (id {id}) got no reply within {t.TotalMilliseconds:F0} ms.");
        }
        catch (OperationCanceledException)
        {
            _pending.TryRemove(id, out _);
            throw;
        }
    }

    /// <summary>
    /// Waits for the next event named <paramref name="name"/> that satisfies <paramref name="predicate"/>, received
    /// after this call registered. To avoid missing a fast event, call this (without awaiting) before issuing the
    /// command that causes it.
    /// </summary>
    /// <param name="name">Event name, e.g. <c>MIGRATION</c>, <c>STOP</c>.</param>
    /// <param name="predicate">Extra filter, run on the reader loop; null accepts any event of that name.</param>
    /// <param name="timeout">Maximum wait; <see cref="Timeout.InfiniteTimeSpan"/> waits forever.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <exception cref="TimeoutException">No matching event within <paramref name="timeout"/>.</exception>
    /// <exception cref="QmpDisconnectedException">The connection closed before a matching event.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public async Task<QmpEvent> WaitForEventAsync(string name, Func<QmpEvent, bool>? predicate, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        EventWaiter waiter = new(name, predicate);
        lock (_eventWaiters)
        {
            ThrowIfClosed();
            _eventWaiters.Add(waiter);
        }

        try
        {
            return await waiter.Tcs.Task.WaitAsync(timeout, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"No QMP event '{name}' matched within {timeout.TotalMilliseconds:F0} ms.");
        }
        finally
        {
            lock (_eventWaiters)
            {
                _eventWaiters.Remove(waiter);
            }
        }
    }

    /// <summary>Closes the connection; pending commands fail with <see cref="QmpDisconnectedException"/>. Idempotent.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            await _readerTask.ConfigureAwait(false);
            return;
        }

        MarkClosed(new QmpDisconnectedException($"QMP client for '{_socketPath}' was disposed."));
        _readerCts.Cancel();
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }
        catch (ObjectDisposedException)
        {
        }

        _socket.Dispose();
        await _readerTask.ConfigureAwait(false);
        _readerCts.Dispose();
        await _writeLock.WaitAsync().ConfigureAwait(false);
        _jsonWriter.Dispose();
        _writeLock.Release();
    }

    private void ThrowIfClosed()
    {
        if (_closedReason is { } reason)
        {
            throw reason;
        }
    }

    private async ValueTask SendAsync(long id, string command, object? arguments, CancellationToken cancellationToken)
    {
        await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            ThrowIfClosed();
            _writeBuffer.ResetWrittenCount();
            _jsonWriter.Reset(_writeBuffer);
            _jsonWriter.WriteStartObject();
            _jsonWriter.WriteString("execute"u8, command);
            if (arguments is not null)
            {
                _jsonWriter.WritePropertyName("arguments"u8);
                if (arguments is JsonElement je)
                {
                    je.WriteTo(_jsonWriter);
                }
                else
                {
                    JsonSerializer.Serialize(_jsonWriter, arguments, arguments.GetType());
                }
            }

            _jsonWriter.WriteNumber("id"u8, id);
            _jsonWriter.WriteEndObject();
            _jsonWriter.Flush();
            _writeBuffer.Write("\n"u8);
            Log.QmpSend(_logger, command, id);

            ReadOnlyMemory<byte> data = _writeBuffer.WrittenMemory;
            while (!data.IsEmpty)
            {
                int n = await _socket.SendAsync(data, SocketFlags.None, CancellationToken.None).ConfigureAwait(false);
                data = data[n..];
            }
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private async Task ReadLoopAsync()
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent(InitialReadBufferBytes);
        int start = 0;
        int end = 0;
        Exception? error = null;
        string reason = "QEMU closed the QMP connection";
        try
        {
            while (true)
            {
                if (end == buffer.Length)
                {
                    if (start > 0)
                    {
                        Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
                        end -= start;
                        start = 0;
                    }
                    else
                    {
                        if (buffer.Length >= MaxMessageBytes)
                        {
                            throw new InvalidDataException($"QMP message longer than {MaxMessageBytes} bytes.");
                        }

                        byte[] bigger = ArrayPool<byte>.Shared.Rent(buffer.Length * 2);
                        Buffer.BlockCopy(buffer, 0, bigger, 0, end);
                        ArrayPool<byte>.Shared.Return(buffer);
                        buffer = bigger;
                    }
                }

                int n = await _socket.ReceiveAsync(buffer.AsMemory(end), SocketFlags.None, _readerCts.Token).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                int scanFrom = end;
                end += n;
                while (true)
                {
                    int nl = Array.IndexOf(buffer, (byte)'\n', scanFrom, end - scanFrom);
                    if (nl < 0)
                    {
                        break;
                    }

                    ProcessLine(buffer.AsMemory(start, nl - start));
                    start = nl + 1;
                    scanFrom = start;
                }

                if (start == end)
                {
                    start = end = 0;
                }
            }
        }
        catch (OperationCanceledException)
        {
            reason = "QMP client was disposed";
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException or InvalidDataException)
        {
            error = e;
            reason = "QMP connection failed: " + e.Message;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        Log.QmpClosed(_logger, _socketPath, reason);
        MarkClosed(new QmpDisconnectedException($"{reason} ('{_socketPath}').", error));
    }

    private void ProcessLine(ReadOnlyMemory<byte> line)
    {
        ReadOnlySpan<byte> span = line.Span.TrimEnd("\r \t"u8).TrimStart(" \t"u8);
        if (span.IsEmpty)
        {
            return;
        }

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(line);
        }
        catch (JsonException e)
        {
            Log.QmpBadMessage(_logger, e.Message);
            return;
        }

        using (doc)
        {
            JsonElement root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                Log.QmpBadMessage(_logger, "not a JSON object");
                return;
            }

            if (root.TryGetProperty("event"u8, out JsonElement ev))
            {
                DispatchEvent(root, ev.GetString() ?? string.Empty);
                return;
            }

            if (root.TryGetProperty("QMP"u8, out JsonElement greeting))
            {
                _greeting.TrySetResult(greeting.Clone());
                return;
            }

            if (!root.TryGetProperty("id"u8, out JsonElement idElement) || idElement.ValueKind != JsonValueKind.Number
                || !idElement.TryGetInt64(out long id))
            {
                Log.QmpUnmatchedReply(_logger, -1);
                return;
            }

            if (!_pending.TryRemove(id, out Pending? pending))
            {
                Log.QmpUnmatchedReply(_logger, id);
                return;
            }

            if (root.TryGetProperty("return"u8, out JsonElement ret))
            {
                pending.TrySetResult(ret.Clone());
            }
            else if (root.TryGetProperty("error"u8, out JsonElement err))
            {
                string cls = err.TryGetProperty("class"u8, out JsonElement c) ? c.GetString() ?? "" : "";
                string desc = err.TryGetProperty("desc"u8, out JsonElement d) ? d.GetString() ?? "" : "";
                Log.QmpError(_logger, pending.Command, cls, desc);
                pending.TrySetException(new QmpErrorException(pending.Command, cls, desc));
            }
            else
            {
                pending.TrySetException(new InvalidDataException($"QMP reply to '{pending.Command}' has neither 'return' nor 'error'."));
            }
        }
    }

    private void DispatchEvent(JsonElement root, string name)
    {
        JsonElement data = root.TryGetProperty("data"u8, out JsonElement d) ? d.Clone() : default;
        DateTimeOffset ts = DateTimeOffset.MinValue;
        if (root.TryGetProperty("timestamp"u8, out JsonElement t) && t.ValueKind == JsonValueKind.Object
            && t.TryGetProperty("seconds"u8, out JsonElement sec) && sec.TryGetInt64(out long s)
            && t.TryGetProperty("microseconds"u8, out JsonElement usec) && usec.TryGetInt64(out long us) && s >= 0)
        {
            ts = DateTimeOffset.FromUnixTimeSeconds(s).AddTicks(us * 10);
        }

        QmpEvent e = new(name, data, ts);
        Log.QmpEvent(_logger, name);
        try
        {
            EventReceived?.Invoke(e);
        }
        catch (Exception ex)
        {
            Log.EventHandlerFailed(_logger, ex, name);
        }

        lock (_eventWaiters)
        {
            for (int i = _eventWaiters.Count - 1; i >= 0; i--)
            {
                EventWaiter w = _eventWaiters[i];
                if (!string.Equals(w.Name, name, StringComparison.Ordinal))
                {
                    continue;
                }

                bool match;
                try
                {
                    match = w.Predicate?.Invoke(e) ?? true;
                }
                catch (Exception ex)
                {
                    w.Tcs.TrySetException(ex);
                    _eventWaiters.RemoveAt(i);
                    continue;
                }

                if (match)
                {
                    w.Tcs.TrySetResult(e);
                    _eventWaiters.RemoveAt(i);
                }
            }
        }
    }

    private void MarkClosed(QmpDisconnectedException reason)
    {
        lock (_eventWaiters)
        {
            if (_closedReason is not null)
            {
                return;
            }

            _closedReason = reason;
            foreach (EventWaiter w in _eventWaiters)
            {
                w.Tcs.TrySetException(reason);
            }

            _eventWaiters.Clear();
        }

        _greeting.TrySetException(reason);
        foreach (long id in _pending.Keys)
        {
            if (_pending.TryRemove(id, out Pending? p))
            {
                p.TrySetException(reason);
            }
        }

        _completion.TrySetResult();
    }

    private sealed class Pending(string command) : TaskCompletionSource<JsonElement>(TaskCreationOptions.RunContinuationsAsynchronously)
    {
        public string Command { get; } = command;
    }

    private sealed class EventWaiter(string name, Func<QmpEvent, bool>? predicate)
    {
        public string Name { get; } = name;

        public Func<QmpEvent, bool>? Predicate { get; } = predicate;

        public TaskCompletionSource<QmpEvent> Tcs { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
