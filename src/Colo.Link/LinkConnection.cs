using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Colo.Link.Internal;
using Microsoft.Extensions.Logging;

namespace Colo.Link;

/// <summary>
/// One end of the replication link: a TCP connection carrying framed messages (<see cref="LinkFraming"/>).
/// Sends are thread-safe and never interleave; receiving is done by one <see cref="RunReceiveLoopAsync"/>.
/// The link closes exactly once (<see cref="Close"/>), and records why in <see cref="CloseReason"/>.
/// </summary>
/// <remarks>
/// Send path: small messages are assembled in a per-connection 64 KiB buffer and written with one socket
/// write; segments of 16 KiB and more that do not fit are written straight from the caller's memory. In the
/// steady state a send allocates nothing. Receive path: a <see cref="PipeReader"/> over the socket with
/// pooled 64 KiB buffers.
/// </remarks>
public sealed class LinkConnection : IAsyncDisposable
{
    /// <summary>Default <see cref="SendTimeout"/>: 5 seconds.</summary>
    public static readonly TimeSpan DefaultSendTimeout = TimeSpan.FromSeconds(5);

    private const int SendBufferSize = 64 * 1024;
    private const int DirectWriteThreshold = 16 * 1024;
    private const int ReceiveBufferSize = 64 * 1024;
    private const int ReceiveMinimumReadSize = 16 * 1024;
    private static readonly TimeSpan MinimumTimerDelay = TimeSpan.FromMilliseconds(1);

    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly ILogger _logger;
    private readonly EndPoint? _remoteEndPoint;
    private readonly EndPoint? _localEndPoint;
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private readonly byte[] _sendBuffer = new byte[SendBufferSize];
    private readonly ITimer _sendTimer;
    private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private string? _closeReason;
    private long _sendTimeoutTicks = DefaultSendTimeout.Ticks;
    private long _sendStartedTimestamp; // Stopwatch timestamp of the message being written; 0 when no write is in progress
    private bool _sendTimerArmed; // guarded by _sendLock
    private int _receiveLoopStarted;
    private long _bytesSent;
    private long _messagesSent;
    private long _bytesReceived;
    private long _messagesReceived;

    internal LinkConnection(Socket socket, ILogger logger)
    {
        _socket = socket;
        _logger = logger;
        _remoteEndPoint = socket.RemoteEndPoint;
        _localEndPoint = socket.LocalEndPoint;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _sendTimer = TimeProvider.System.CreateTimer(
            static state => ((LinkConnection)state!).OnSendTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>
    /// Longest time one message may take to be handed to the kernel, measured from the moment its first byte is
    /// written (time queued behind other senders is not counted; each of those is bounded the same way). When it
    /// expires the link is closed and the send throws <see cref="LinkClosedException"/>. Default
    /// <see cref="DefaultSendTimeout"/>; <see cref="Timeout.InfiniteTimeSpan"/> disables it. Takes effect for
    /// messages started after the change.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Set to zero or a negative value other than <see cref="Timeout.InfiniteTimeSpan"/>.</exception>
    public TimeSpan SendTimeout
    {
        get => TimeSpan.FromTicks(Volatile.Read(ref _sendTimeoutTicks));
        set
        {
            if (value <= TimeSpan.Zero && value != Timeout.InfiniteTimeSpan)
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "The send timeout must be positive or infinite.");
            }

            Volatile.Write(ref _sendTimeoutTicks, value.Ticks);
        }
    }

    /// <summary>The peer's address.</summary>
    public EndPoint? RemoteEndPoint => _remoteEndPoint;

    /// <summary>This end's address.</summary>
    public EndPoint? LocalEndPoint => _localEndPoint;

    /// <summary>Why the link was closed (the first reason given), or <c>null</c> while it is open.</summary>
    public string? CloseReason => Volatile.Read(ref _closeReason);

    /// <summary>Whether the link has been closed.</summary>
    public bool IsClosed => Volatile.Read(ref _closeReason) is not null;

    /// <summary>Completes (never faults) when the link closes; <see cref="CloseReason"/> is set by then.</summary>
    public Task Closed => _closed.Task;

    /// <summary>Bytes written to the socket, headers included, counting only completely sent messages.</summary>
    public long BytesSent => Interlocked.Read(ref _bytesSent);

    /// <summary>Messages completely written to the socket.</summary>
    public long MessagesSent => Interlocked.Read(ref _messagesSent);

    /// <summary>Bytes of complete messages received, headers included.</summary>
    public long BytesReceived => Interlocked.Read(ref _bytesReceived);

    /// <summary>Complete messages received and handed to the handler.</summary>
    public long MessagesReceived => Interlocked.Read(ref _messagesReceived);

    /// <summary>
    /// Connects to the peer's <see cref="LinkListener"/>, retrying refused or failed attempts (backoff 20 ms
    /// doubling to 500 ms) until <paramref name="timeout"/> has passed. The socket gets TCP_NODELAY and TCP
    /// keepalive (first probe after 2 s idle, then every 1 s, 3 probes).
    /// </summary>
    /// <param name="remote">The peer's listening address.</param>
    /// <param name="timeout">Total time allowed for all attempts; <see cref="Timeout.InfiniteTimeSpan"/> retries forever.</param>
    /// <param name="logger">Receives connection and close events.</param>
    /// <param name="ct">Cancels the attempts.</param>
    /// <returns>The open connection.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is zero or negative (and not infinite).</exception>
    /// <exception cref="TimeoutException">No attempt succeeded within <paramref name="timeout"/>; the last error is the inner exception.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="ct"/> was cancelled.</exception>
    public static async Task<LinkConnection> ConnectAsync(IPEndPoint remote, TimeSpan timeout, ILogger logger, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(remote);
        ArgumentNullException.ThrowIfNull(logger);
        bool infinite = timeout == Timeout.InfiniteTimeSpan;
        if (timeout <= TimeSpan.Zero && !infinite)
        {
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "The connect timeout must be positive or infinite.");
        }

        long start = Stopwatch.GetTimestamp();
        int delayMs = 20;
        Exception? lastError = null;
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            TimeSpan remaining = infinite ? Timeout.InfiniteTimeSpan : timeout - Stopwatch.GetElapsedTime(start);
            if (!infinite && remaining <= TimeSpan.Zero)
            {
                throw new TimeoutException($"Could not connect the replication link to {remote} within {timeout.TotalMilliseconds:F0} ms.", lastError);
            }

            var socket = new Socket(remote.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                using (var attempt = CancellationTokenSource.CreateLinkedTokenSource(ct))
                {
                    attempt.CancelAfter(remaining);
                    await socket.ConnectAsync(remote, attempt.Token).ConfigureAwait(false);
                }

                SocketSetup.Configure(socket, logger);
                var connection = new LinkConnection(socket, logger);
                Log.Connected(logger, connection.RemoteEndPoint, connection.LocalEndPoint);
                return connection;
            }
            catch (SocketException ex)
            {
                socket.Dispose();
                lastError = ex;
            }
            catch (OperationCanceledException ex) when (!ct.IsCancellationRequested)
            {
                // This attempt used up the remaining time; keep the more telling socket error if there was one.
                socket.Dispose();
                lastError ??= ex;
            }
            catch
            {
                socket.Dispose();
                throw;
            }

            int wait = delayMs;
            if (!infinite)
            {
                wait = (int)Math.Min(wait, Math.Max(0, (timeout - Stopwatch.GetElapsedTime(start)).TotalMilliseconds));
            }

            if (wait > 0)
            {
                Log.ConnectRetry(logger, remote, lastError.Message, wait);
                await Task.Delay(wait, ct).ConfigureAwait(false);
            }

            delayMs = Math.Min(delayMs * 2, 500);
        }
    }

    /// <summary>Wraps an accepted socket; used by <see cref="LinkListener"/>.</summary>
    internal static LinkConnection FromAccepted(Socket socket, ILogger logger)
    {
        SocketSetup.Configure(socket, logger);
        var connection = new LinkConnection(socket, logger);
        Log.Accepted(logger, connection.RemoteEndPoint, connection.LocalEndPoint);
        return connection;
    }

    /// <summary>
    /// Sends one message. Thread-safe: concurrent calls are serialised, each message is written whole, and
    /// messages from one caller keep their order. <paramref name="payload"/> may be reused once the returned
    /// task completes.
    /// </summary>
    /// <param name="type">The message type.</param>
    /// <param name="epoch">The epoch written into the header.</param>
    /// <param name="payload">The payload, 0 to <see cref="LinkFraming.MaxPayloadLength"/> bytes.</param>
    /// <param name="ct">Observed only while waiting for other sends; a message that has begun to be written completes, fails or times out as a whole.</param>
    /// <returns>Completes when the whole message has been handed to the kernel.</returns>
    /// <exception cref="ArgumentOutOfRangeException">Unknown <paramref name="type"/> or payload too large (the link stays open).</exception>
    /// <exception cref="LinkClosedException">The link is closed, or closed during the send (socket error or <see cref="SendTimeout"/> expired).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="ct"/> was cancelled before the message began to be written (the link stays open).</exception>
    public ValueTask SendAsync(MessageType type, ulong epoch, ReadOnlyMemory<byte> payload, CancellationToken ct = default)
        => SendAsync(type, epoch, payload, ReadOnlyMemory<byte>.Empty, ct);

    /// <summary>
    /// Sends one message whose payload is <paramref name="first"/> followed by <paramref name="second"/>, without
    /// concatenating them first (e.g. a page-batch header and the pages). Otherwise as
    /// <see cref="SendAsync(MessageType, ulong, ReadOnlyMemory{byte}, CancellationToken)"/>.
    /// </summary>
    /// <param name="type">The message type.</param>
    /// <param name="epoch">The epoch written into the header.</param>
    /// <param name="first">First part of the payload.</param>
    /// <param name="second">Second part of the payload; the two together at most <see cref="LinkFraming.MaxPayloadLength"/> bytes.</param>
    /// <param name="ct">Observed only while waiting for other sends.</param>
    /// <returns>Completes when the whole message has been handed to the kernel.</returns>
    /// <exception cref="ArgumentOutOfRangeException">Unknown <paramref name="type"/> or payload too large (the link stays open).</exception>
    /// <exception cref="LinkClosedException">The link is closed, or closed during the send.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="ct"/> was cancelled before the message began to be written.</exception>
    public ValueTask SendAsync(MessageType type, ulong epoch, ReadOnlyMemory<byte> first, ReadOnlyMemory<byte> second, CancellationToken ct = default)
    {
        LinkFraming.ValidateOutgoing(type, (long)first.Length + second.Length);
        string? reason = CloseReason;
        if (reason is not null)
        {
            return ValueTask.FromException(new LinkClosedException(reason));
        }

        return SendCoreAsync(type, epoch, first, second, ct);
    }

    /// <summary>Sends a <see cref="MessageType.Goodbye"/> carrying <paramref name="reason"/>; the link stays open (dispose it afterwards).</summary>
    /// <param name="reason">Why this side is leaving (UTF-8, truncated to <see cref="LinkGoodbye.MaxReasonBytes"/>).</param>
    /// <param name="epoch">The epoch written into the header.</param>
    /// <param name="ct">Observed only while waiting for other sends.</param>
    /// <returns>Completes when the message has been handed to the kernel.</returns>
    /// <exception cref="LinkClosedException">The link is closed, or closed during the send.</exception>
    public ValueTask SendGoodbyeAsync(string reason, ulong epoch, CancellationToken ct = default)
        => SendAsync(MessageType.Goodbye, epoch, LinkGoodbye.Encode(reason), ct);

    /// <summary>
    /// Reads messages until the link closes and hands each to <paramref name="handler"/>, one at a time, in
    /// arrival order. The returned task is the link's receive lifetime: it completes normally when the link
    /// closes for any reason — peer closed ("peer closed the connection"), stream cut mid-message ("truncated:
    /// ..."), protocol violation ("protocol violation: ..."), <see cref="MessageType.Goodbye"/> received ("peer
    /// said goodbye: ..."), <see cref="Close"/>, or <paramref name="ct"/> ("receive loop cancelled") — always
    /// closing the link first. A <see cref="MessageType.Goodbye"/> is delivered to the handler before the link closes.
    /// </summary>
    /// <param name="handler">Consumes messages; see <see cref="LinkMessageHandler"/>.</param>
    /// <param name="ct">Cancelling it closes the link.</param>
    /// <returns>Completes when the link is closed; faults only with an exception thrown by <paramref name="handler"/> (other than <see cref="LinkProtocolException"/>), after closing the link.</returns>
    /// <exception cref="InvalidOperationException">The receive loop has already been started on this connection.</exception>
    public Task RunReceiveLoopAsync(LinkMessageHandler handler, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(handler);
        if (Interlocked.Exchange(ref _receiveLoopStarted, 1) != 0)
        {
            throw new InvalidOperationException("The receive loop of this link has already been started.");
        }

        return ReceiveLoopAsync(handler, ct);
    }

    /// <summary>
    /// Closes the link: records <paramref name="reason"/> if it is the first, shuts the socket down (pending sends
    /// fail with <see cref="LinkClosedException"/>, the receive loop ends) and completes <see cref="Closed"/>.
    /// Idempotent; later calls do nothing.
    /// </summary>
    /// <param name="reason">Why the link is closed.</param>
    /// <exception cref="ArgumentNullException"><paramref name="reason"/> is null.</exception>
    public void Close(string reason)
    {
        ArgumentNullException.ThrowIfNull(reason);
        CloseCore(reason, abnormal: false);
    }

    /// <summary>Closes the link with reason "disposed" unless it is already closed.</summary>
    /// <returns>A completed task.</returns>
    public ValueTask DisposeAsync()
    {
        CloseCore("disposed", abnormal: false);
        return default;
    }

    /// <summary>
    /// The send direction failed (typically: the peer closed or reset the connection). Further sends fail at once,
    /// but the receive loop goes on reading what the peer sent before (a <c>Goodbye</c> may be waiting in the socket
    /// buffer and must not be lost); the link closes when that loop ends, or after <see cref="DrainTimeout"/>.
    /// </summary>
    private void SendBroken(string reason)
    {
        if (Interlocked.CompareExchange(ref _sendBrokenReason, reason, null) is not null || IsClosed)
        {
            return;
        }

        _ = Task.Delay(DrainTimeout).ContinueWith(
            static (_, state) => { var c = (LinkConnection)state!; c.CloseCore(c._sendBrokenReason!, abnormal: true); },
            this,
            TaskScheduler.Default);
    }

    /// <summary>How long the receive loop may drain after the send direction failed (1 s).</summary>
    public static readonly TimeSpan DrainTimeout = TimeSpan.FromSeconds(1);

    private string? _sendBrokenReason;

    private void CloseCore(string reason, bool abnormal)
    {
        if (Interlocked.CompareExchange(ref _closeReason, reason, null) is not null)
        {
            return;
        }

        Log.Closed(_logger, abnormal ? LogLevel.Warning : LogLevel.Information, _remoteEndPoint, reason);
        try
        {
            if (abnormal)
            {
                // Reset rather than linger: a peer that broke the protocol or stopped reading gets nothing more.
                _socket.LingerState = new LingerOption(true, 0);
            }
            else
            {
                _socket.Shutdown(SocketShutdown.Both);
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // Already reset by the peer or disposed; closing below is all that is left to do.
        }

        _stream.Dispose();
        _sendTimer.Dispose();
        _closed.TrySetResult();
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask SendCoreAsync(MessageType type, ulong epoch, ReadOnlyMemory<byte> first, ReadOnlyMemory<byte> second, CancellationToken ct)
    {
        await _sendLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            string? reason = CloseReason ?? Volatile.Read(ref _sendBrokenReason);
            if (reason is not null)
            {
                LinkClosedException.Throw(reason);
            }

            int payloadLength = first.Length + second.Length;
            Volatile.Write(ref _sendStartedTimestamp, Stopwatch.GetTimestamp());
            LinkFraming.WriteHeader(_sendBuffer, type, epoch, payloadLength);
            int buffered = LinkFraming.HeaderSize;
            buffered = await AppendAsync(first, buffered).ConfigureAwait(false);
            buffered = await AppendAsync(second, buffered).ConfigureAwait(false);
            if (buffered > 0)
            {
                await WriteAsync(_sendBuffer.AsMemory(0, buffered)).ConfigureAwait(false);
            }

            Interlocked.Add(ref _bytesSent, LinkFraming.HeaderSize + payloadLength);
            Interlocked.Increment(ref _messagesSent);
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
        {
            SendBroken("send failed: " + ex.Message);
            LinkClosedException.Throw(CloseReason ?? _sendBrokenReason!, ex);
        }
        finally
        {
            Volatile.Write(ref _sendStartedTimestamp, 0);
            if (_sendTimerArmed)
            {
                _sendTimerArmed = false;
                TryChangeSendTimer(Timeout.InfiniteTimeSpan);
            }

            _sendLock.Release();
        }
    }

    /// <summary>Adds <paramref name="segment"/> after <paramref name="buffered"/> bytes of the send buffer, writing out as needed.</summary>
    /// <returns>How many bytes are now buffered.</returns>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<int> AppendAsync(ReadOnlyMemory<byte> segment, int buffered)
    {
        int space = _sendBuffer.Length - buffered;
        if (segment.Length <= space)
        {
            segment.Span.CopyTo(_sendBuffer.AsSpan(buffered));
            return buffered + segment.Length;
        }

        // Top up the buffer (so the header travels with the first payload bytes), write it, then write the rest
        // straight from the caller's memory unless it is small enough to buffer.
        segment.Span.Slice(0, space).CopyTo(_sendBuffer.AsSpan(buffered));
        await WriteAsync(_sendBuffer).ConfigureAwait(false);
        ReadOnlyMemory<byte> rest = segment.Slice(space);
        if (rest.Length < DirectWriteThreshold)
        {
            rest.Span.CopyTo(_sendBuffer);
            return rest.Length;
        }

        await WriteAsync(rest).ConfigureAwait(false);
        return 0;
    }

    /// <summary>Writes to the socket; arms the send deadline the first time a write of the message does not complete at once.</summary>
    private ValueTask WriteAsync(ReadOnlyMemory<byte> data)
    {
        ValueTask pending = _stream.WriteAsync(data);
        if (!pending.IsCompleted)
        {
            ArmSendTimer();
        }

        return pending;
    }

    private void ArmSendTimer()
    {
        TimeSpan timeout = SendTimeout;
        if (_sendTimerArmed || timeout == Timeout.InfiniteTimeSpan)
        {
            return;
        }

        _sendTimerArmed = true;
        TimeSpan remaining = timeout - Stopwatch.GetElapsedTime(Volatile.Read(ref _sendStartedTimestamp));
        TryChangeSendTimer(remaining < MinimumTimerDelay ? MinimumTimerDelay : remaining);
    }

    private void OnSendTimer()
    {
        long started = Volatile.Read(ref _sendStartedTimestamp);
        TimeSpan timeout = SendTimeout;
        if (started == 0 || IsClosed || timeout == Timeout.InfiniteTimeSpan)
        {
            return;
        }

        TimeSpan elapsed = Stopwatch.GetElapsedTime(started);
        if (elapsed >= timeout)
        {
            CloseCore($"send timed out: message not accepted by the peer within {timeout.TotalMilliseconds:F0} ms", abnormal: true);
        }
        else
        {
            // Fired early, or belongs to an earlier message: wait for the rest of the current message's time.
            TryChangeSendTimer(timeout - elapsed);
        }
    }

    private void TryChangeSendTimer(TimeSpan dueTime)
    {
        try
        {
            _sendTimer.Change(dueTime, Timeout.InfiniteTimeSpan);
        }
        catch (ObjectDisposedException)
        {
            // The link closed meanwhile.
        }
    }

    private async Task ReceiveLoopAsync(LinkMessageHandler handler, CancellationToken ct)
    {
        PipeReader reader = PipeReader.Create(
            _stream,
            new StreamPipeReaderOptions(bufferSize: ReceiveBufferSize, minimumReadSize: ReceiveMinimumReadSize, leaveOpen: true));
        using CancellationTokenRegistration cancellation = ct.UnsafeRegister(
            static state => ((LinkConnection)state!).CloseCore("receive loop cancelled", abnormal: false), this);
        try
        {
            while (!IsClosed)
            {
                ReadResult result;
                try
                {
                    result = await reader.ReadAsync().ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
                {
                    CloseCore("receive failed: " + ex.Message, abnormal: true);
                    return;
                }

                ReadOnlySequence<byte> buffer = result.Buffer;
                try
                {
                    while (LinkFraming.TryReadMessage(ref buffer, out MessageHeader header, out ReadOnlySequence<byte> payload))
                    {
                        try
                        {
                            await handler(header.Type, header.Epoch, payload).ConfigureAwait(false);
                        }
                        catch (Exception ex) when (ex is not LinkProtocolException)
                        {
                            CloseCore($"message handler failed on {header.Type}: {ex.Message}", abnormal: true);
                            throw;
                        }

                        Interlocked.Add(ref _bytesReceived, LinkFraming.HeaderSize + header.PayloadLength);
                        Interlocked.Increment(ref _messagesReceived);
                        if (header.Type == MessageType.Goodbye)
                        {
                            CloseCore("peer said goodbye: " + LinkGoodbye.Decode(payload), abnormal: false);
                            return;
                        }

                        if (IsClosed)
                        {
                            return;
                        }
                    }

                    if (result.IsCompleted || result.IsCanceled)
                    {
                        CloseCore(
                            buffer.IsEmpty
                                ? "peer closed the connection"
                                : $"truncated: peer closed the connection inside a message ({buffer.Length} bytes of it received)",
                            abnormal: true);
                        return;
                    }
                }
                catch (LinkProtocolException ex)
                {
                    CloseCore("protocol violation: " + ex.Reason, abnormal: true);
                    return;
                }
                finally
                {
                    reader.AdvanceTo(buffer.Start, buffer.End);
                }
            }
        }
        finally
        {
            await reader.CompleteAsync().ConfigureAwait(false);
        }
    }
}
