using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Text;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using static Colo.Nbd.Internal.NbdProtocol;

namespace Colo.Nbd.Internal;

/// <summary>
/// One client connection: the fixed-newstyle handshake, then transmission. One reader loop parses requests and starts
/// them (a request whose device call completes synchronously is finished on the spot), up to
/// <see cref="NbdServerOptions.MaxInFlightRequests"/> run concurrently, and one writer task sends the replies in
/// completion order (so replies may overtake each other; the handle matches them up), batching small ones.
/// </summary>
internal sealed class NbdConnection
{
    private const int WriteBatchSize = 128 * 1024;
    private const int CopyIntoBatchLimit = 64 * 1024;
    private const int DirectReadThreshold = 128 * 1024;

    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly PipeReader _reader;
    private readonly NbdServer _server;
    private readonly IBlockDevice _device;
    private readonly NbdServerOptions _options;
    private readonly ILogger _logger;
    private readonly long _id;
    private readonly Channel<Reply> _replies;
    private readonly InFlightLimiter _limiter;
    private readonly byte[] _header = new byte[RequestSize];
    private string? _closeReason;
    private int _aborted;
    private volatile bool _sendFailed;
    private long _sendStarted; // Stopwatch timestamp of the send in progress, 0 when none

    public NbdConnection(Socket socket, NbdServer server, long id)
    {
        _socket = socket;
        _server = server;
        _device = server.Device;
        _options = server.Options;
        _logger = server.Logger;
        _id = id;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _reader = PipeReader.Create(_stream, new StreamPipeReaderOptions(bufferSize: 64 * 1024, minimumReadSize: 16 * 1024, leaveOpen: true));
        _replies = Channel.CreateUnbounded<Reply>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = false });
        _limiter = new InFlightLimiter(_options.MaxInFlightRequests, _options.MaxInFlightBytes);
    }

    /// <summary>Why the connection closed (first reason recorded), or null while open.</summary>
    public string? CloseReason => Volatile.Read(ref _closeReason);

    /// <summary>Runs the connection to its end; never throws.</summary>
    /// <param name="shutdown">Server shutdown: stop reading requests, finish the ones in flight, close.</param>
    /// <param name="hardStop">Close the socket at once (shutdown grace expired).</param>
    public async Task RunAsync(CancellationToken shutdown, CancellationToken hardStop)
    {
        LogLevel level = LogLevel.Debug;
        Task? writer = null;
        using CancellationTokenRegistration hardReg = hardStop.UnsafeRegister(static s => ((NbdConnection)s!).Abort("server stopped (shutdown grace expired)"), this);
        try
        {
            bool transmission;
            using (var handshake = CancellationTokenSource.CreateLinkedTokenSource(shutdown))
            {
                handshake.CancelAfter(_options.HandshakeTimeout);
                try
                {
                    transmission = await HandshakeAsync(handshake.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!shutdown.IsCancellationRequested)
                {
                    level = LogLevel.Warning;
                    SetReason($"handshake not completed within {_options.HandshakeTimeout.TotalSeconds:F0} s");
                    return;
                }
                catch (OperationCanceledException)
                {
                    SetReason("server shutting down during the handshake");
                    return;
                }
            }

            if (!transmission)
            {
                return;
            }

            writer = RunWriterAsync();
            using (shutdown.UnsafeRegister(static s => ((NbdConnection)s!)._reader.CancelPendingRead(), this))
            {
                await TransmissionAsync().ConfigureAwait(false);
            }

            // Soft end (DISC, peer closed its side, shutdown): finish what is in flight and send its replies.
            await _limiter.WaitIdleAsync().WaitAsync(hardStop).ConfigureAwait(false);
        }
        catch (NbdProtocolException ex)
        {
            level = LogLevel.Warning;
            SetReason("protocol violation: " + ex.Message);
        }
        catch (EndOfStreamException)
        {
            SetReason("peer closed the connection mid-message");
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
            level = _sendFailed ? LogLevel.Warning : LogLevel.Debug;
            SetReason(_sendFailed ? "sending a reply failed" : "connection lost: " + ex.Message);
        }
        catch (Exception ex)
        {
            level = LogLevel.Error;
            SetReason("unexpected error: " + ex);
        }
        finally
        {
            _limiter.Close();
            _replies.Writer.TryComplete();
            if (writer is not null)
            {
                try
                {
                    await writer.WaitAsync(hardStop).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    // Hard stop: the socket is closed, the writer ends on its own.
                }
                catch (Exception ex)
                {
                    level = LogLevel.Error;
                    SetReason("reply writer failed: " + ex);
                }
            }

            Abort(null);
            Log.Closed(_logger, level, _id, CloseReason ?? "closed");
        }
    }

    /// <summary>Closes the socket now (idempotent); pending reads and sends fail.</summary>
    public void Abort(string? reason)
    {
        if (reason is not null)
        {
            SetReason(reason);
        }

        if (Interlocked.Exchange(ref _aborted, 1) == 0)
        {
            _limiter.Close();
            try
            {
                _socket.Shutdown(SocketShutdown.Both);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                // Already gone.
            }

            _stream.Dispose();
        }
    }

    private void SetReason(string reason) => Interlocked.CompareExchange(ref _closeReason, reason, null);

    // ---------------------------------------------------------------- handshake

    /// <returns>True when transmission starts; false when the session ended cleanly (reason recorded).</returns>
    private async Task<bool> HandshakeAsync(CancellationToken ct)
    {
        byte[] greeting = new byte[18];
        BinaryPrimitives.WriteUInt64BigEndian(greeting, NbdMagic);
        BinaryPrimitives.WriteUInt64BigEndian(greeting.AsSpan(8), IHaveOpt);
        BinaryPrimitives.WriteUInt16BigEndian(greeting.AsSpan(16), FlagFixedNewstyle | FlagNoZeroes);
        await _stream.WriteAsync(greeting, ct).ConfigureAwait(false);

        byte[] small = new byte[OptionHeaderSize];
        if (!await TryReadExactAsync(small.AsMemory(0, 4), ct).ConfigureAwait(false))
        {
            SetReason("peer closed before sending its flags");
            return false;
        }

        uint clientFlags = BinaryPrimitives.ReadUInt32BigEndian(small);
        if ((clientFlags & ~(ClientFlagFixedNewstyle | ClientFlagNoZeroes)) != 0)
        {
            NbdProtocolException.Throw($"unknown client flags 0x{clientFlags:x}");
        }

        bool noZeroes = (clientFlags & ClientFlagNoZeroes) != 0;
        while (true)
        {
            if (!await TryReadExactAsync(small.AsMemory(0, OptionHeaderSize), ct).ConfigureAwait(false))
            {
                SetReason("peer closed during option haggling");
                return false;
            }

            ulong magic = BinaryPrimitives.ReadUInt64BigEndian(small);
            uint option = BinaryPrimitives.ReadUInt32BigEndian(small.AsSpan(8));
            uint length = BinaryPrimitives.ReadUInt32BigEndian(small.AsSpan(12));
            if (magic != IHaveOpt)
            {
                NbdProtocolException.Throw($"bad option magic 0x{magic:x}");
            }

            if (length > (uint)_options.MaxOptionLength)
            {
                NbdProtocolException.Throw($"option {option} length {length} exceeds {_options.MaxOptionLength}");
            }

            byte[] data = new byte[length];
            await ReadExactAsync(data, ct).ConfigureAwait(false);
            switch (option)
            {
                case OptExportName:
                    if (!_server.IsExportName(data))
                    {
                        NbdProtocolException.Throw($"NBD_OPT_EXPORT_NAME for unknown export '{Printable(data)}'");
                    }

                    byte[] reply = new byte[noZeroes ? 10 : 134];
                    BinaryPrimitives.WriteUInt64BigEndian(reply, (ulong)_device.Size);
                    BinaryPrimitives.WriteUInt16BigEndian(reply.AsSpan(8), TransmissionFlags);
                    await _stream.WriteAsync(reply, ct).ConfigureAwait(false);
                    Log.Transmission(_logger, _id, _server.ExportName, clientFlags);
                    return true;

                case OptAbort:
                    try
                    {
                        await SendOptionReplyAsync(option, RepAck, ReadOnlyMemory<byte>.Empty, ct).ConfigureAwait(false);
                    }
                    catch (Exception ex) when (ex is IOException or SocketException)
                    {
                        // The client may drop the connection without waiting for the ACK.
                    }

                    SetReason("client aborted the handshake (NBD_OPT_ABORT)");
                    return false;

                case OptList:
                    if (length != 0)
                    {
                        await RejectOptionAsync(option, RepErrInvalid, "NBD_OPT_LIST takes no data", ct).ConfigureAwait(false);
                        break;
                    }

                    byte[] name = _server.ExportNameUtf8;
                    byte[] server = new byte[4 + name.Length];
                    BinaryPrimitives.WriteUInt32BigEndian(server, (uint)name.Length);
                    name.CopyTo(server, 4);
                    await SendOptionReplyAsync(option, RepServer, server, ct).ConfigureAwait(false);
                    await SendOptionReplyAsync(option, RepAck, ReadOnlyMemory<byte>.Empty, ct).ConfigureAwait(false);
                    break;

                case OptInfo:
                case OptGo:
                    if (await InfoOrGoAsync(option, data, ct).ConfigureAwait(false))
                    {
                        Log.Transmission(_logger, _id, _server.ExportName, clientFlags);
                        return true;
                    }

                    break;

                default:
                    // STARTTLS, STRUCTURED_REPLY, meta contexts and anything newer: not supported (simple replies only).
                    await RejectOptionAsync(option, RepErrUnsup, $"option {option} not supported", ct).ConfigureAwait(false);
                    break;
            }
        }
    }

    /// <returns>True when the option was a successful NBD_OPT_GO (transmission starts).</returns>
    private async Task<bool> InfoOrGoAsync(uint option, byte[] data, CancellationToken ct)
    {
        // Data: u32 name length, name, u16 number of info requests, u16 each.
        if (data.Length < 6)
        {
            await RejectOptionAsync(option, RepErrInvalid, "option data too short", ct).ConfigureAwait(false);
            return false;
        }

        uint nameLength = BinaryPrimitives.ReadUInt32BigEndian(data);
        if (nameLength > NbdProtocolLimits.MaxNameLength || nameLength > (uint)data.Length - 6)
        {
            await RejectOptionAsync(option, RepErrInvalid, "export name length inconsistent with option length", ct).ConfigureAwait(false);
            return false;
        }

        int requestsAt = 4 + (int)nameLength;
        int requestCount = BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(requestsAt));
        if (data.Length != requestsAt + 2 + (2 * requestCount))
        {
            await RejectOptionAsync(option, RepErrInvalid, "information request count inconsistent with option length", ct).ConfigureAwait(false);
            return false;
        }

        ReadOnlySpan<byte> name = data.AsSpan(4, (int)nameLength);
        if (!_server.IsExportName(name))
        {
            await RejectOptionAsync(option, RepErrUnknown, $"no export named '{Printable(name)}'", ct).ConfigureAwait(false);
            return false;
        }

        bool wantName = false;
        for (int i = 0; i < requestCount; i++)
        {
            wantName |= BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(requestsAt + 2 + (2 * i))) == InfoName;
        }

        byte[] export = new byte[12];
        BinaryPrimitives.WriteUInt16BigEndian(export, InfoExport);
        BinaryPrimitives.WriteUInt64BigEndian(export.AsSpan(2), (ulong)_device.Size);
        BinaryPrimitives.WriteUInt16BigEndian(export.AsSpan(10), TransmissionFlags);
        await SendOptionReplyAsync(option, RepInfo, export, ct).ConfigureAwait(false);

        if (wantName)
        {
            byte[] exportName = _server.ExportNameUtf8;
            byte[] info = new byte[2 + exportName.Length];
            BinaryPrimitives.WriteUInt16BigEndian(info, InfoName);
            exportName.CopyTo(info, 2);
            await SendOptionReplyAsync(option, RepInfo, info, ct).ConfigureAwait(false);
        }

        // Block sizes may be sent unasked; QEMU asks for them.
        byte[] sizes = new byte[14];
        BinaryPrimitives.WriteUInt16BigEndian(sizes, InfoBlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(2), MinimumBlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(6), PreferredBlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(10), (uint)_options.MaxPayload);
        await SendOptionReplyAsync(option, RepInfo, sizes, ct).ConfigureAwait(false);
        await SendOptionReplyAsync(option, RepAck, ReadOnlyMemory<byte>.Empty, ct).ConfigureAwait(false);
        return option == OptGo;
    }

    private ushort TransmissionFlags
    {
        get
        {
            ushort flags = FlagHasFlags | FlagSendFlush | FlagCanMultiConn;
            return _device.IsReadOnly
                ? (ushort)(flags | FlagReadOnly)
                : (ushort)(flags | FlagSendFua | FlagSendTrim | FlagSendWriteZeroes);
        }
    }

    private ValueTask RejectOptionAsync(uint option, uint reply, string message, CancellationToken ct)
    {
        Log.OptionRejected(_logger, _id, option, reply);
        return SendOptionReplyAsync(option, reply, Encoding.UTF8.GetBytes(message), ct);
    }

    private async ValueTask SendOptionReplyAsync(uint option, uint reply, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        byte[] message = new byte[20 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(message, OptionReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(12), reply);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(16), (uint)data.Length);
        data.Span.CopyTo(message.AsSpan(20));
        await _stream.WriteAsync(message, ct).ConfigureAwait(false);
    }

    private static string Printable(ReadOnlySpan<byte> name)
    {
        string s = Encoding.UTF8.GetString(name[..Math.Min(name.Length, 64)]);
        return string.Create(s.Length, s, static (dst, src) =>
        {
            for (int i = 0; i < src.Length; i++)
            {
                dst[i] = char.IsControl(src[i]) ? '?' : src[i];
            }
        });
    }

    // ---------------------------------------------------------------- transmission

    private async Task TransmissionAsync()
    {
        long size = _device.Size;
        bool readOnly = _device.IsReadOnly;
        int maxPayload = _options.MaxPayload;
        while (true)
        {
            if (!await ReadRequestHeaderAsync().ConfigureAwait(false))
            {
                return;
            }

            Request req = Request.Parse(_header);
            if (req.Magic != RequestMagic)
            {
                NbdProtocolException.Throw($"bad request magic 0x{req.Magic:x8}");
            }

            if (req.Type == CmdDisc)
            {
                SetReason("client disconnected (NBD_CMD_DISC)");
                return;
            }

            bool inRange = req.Offset <= (ulong)size && req.Length <= (ulong)size - req.Offset;
            NbdError error = NbdError.None;
            ushort allowedFlags = CmdFlagFua; // FUA is valid on every command once SEND_FUA is advertised
            switch (req.Type)
            {
                case CmdRead:
                    error = req.Length > (uint)maxPayload || !inRange ? NbdError.Inval : NbdError.None;
                    break;
                case CmdWrite:
                    error = readOnly ? NbdError.Perm : req.Length > (uint)maxPayload ? NbdError.Inval : !inRange ? NbdError.NoSpc : NbdError.None;
                    break;
                case CmdFlush:
                    break;
                case CmdTrim:
                    error = readOnly ? NbdError.Perm : !inRange ? NbdError.Inval : NbdError.None;
                    break;
                case CmdWriteZeroes:
                    allowedFlags |= CmdFlagNoHole;
                    error = readOnly ? NbdError.Perm : !inRange ? NbdError.NoSpc : NbdError.None;
                    break;
                default:
                    error = NbdError.Inval; // unknown command (CACHE, BLOCK_STATUS, ... are not advertised)
                    break;
            }

            if ((req.Flags & ~allowedFlags) != 0)
            {
                error = NbdError.Inval;
            }

            if (error != NbdError.None)
            {
                if (req.Type == CmdWrite)
                {
                    // The payload follows whatever we think of the request: skip it to stay in step.
                    if (req.Length > _options.MaxDiscardedPayload)
                    {
                        NbdProtocolException.Throw($"write of {req.Length} bytes is too large to discard");
                    }

                    await SkipAsync(req.Length).ConfigureAwait(false);
                }

                Log.RequestRejected(_logger, _id, req.Type, req.Flags, req.Offset, req.Length, error);
                if (!await _limiter.AcquireAsync(0).ConfigureAwait(false))
                {
                    return;
                }

                Post(new Reply(req.Handle, error, null, 0, 0));
                continue;
            }

            long payload = req.Type is CmdRead or CmdWrite ? req.Length : 0;
            if (!await _limiter.AcquireAsync(payload).ConfigureAwait(false))
            {
                return;
            }

            byte[]? buffer = null;
            if (req.Type == CmdRead)
            {
                buffer = ArrayPool<byte>.Shared.Rent(SimpleReplySize + (int)req.Length);
            }
            else if (req.Type == CmdWrite)
            {
                buffer = ArrayPool<byte>.Shared.Rent((int)req.Length);
                try
                {
                    await ReadPayloadAsync(buffer.AsMemory(0, (int)req.Length)).ConfigureAwait(false);
                }
                catch
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    _limiter.Release(payload);
                    throw;
                }
            }

            Dispatch(req, buffer, payload);
        }
    }

    /// <summary>Starts a validated request; finishes it inline when the device completes synchronously.</summary>
    private void Dispatch(Request req, byte[]? buffer, long payload)
    {
        ValueTask operation;
        try
        {
            operation = Start(req, buffer);
        }
        catch (Exception ex)
        {
            operation = ValueTask.FromException(ex);
        }

        if (operation.IsCompletedSuccessfully)
        {
            Complete(req, buffer, payload, NbdError.None);
        }
        else
        {
            _ = CompleteLaterAsync(operation, req, buffer, payload);
        }
    }

    private ValueTask Start(Request req, byte[]? buffer)
    {
        long offset = (long)req.Offset;
        bool fua = (req.Flags & CmdFlagFua) != 0;
        return req.Type switch
        {
            CmdRead => _device.ReadAsync(offset, buffer.AsMemory(SimpleReplySize, (int)req.Length)),
            CmdWrite => _device.WriteAsync(offset, buffer.AsMemory(0, (int)req.Length), fua),
            CmdFlush => _device.FlushAsync(),
            CmdTrim => fua ? ThenFlushAsync(_device.TrimAsync(offset, req.Length)) : _device.TrimAsync(offset, req.Length),
            CmdWriteZeroes => fua
                ? ThenFlushAsync(_device.WriteZeroesAsync(offset, req.Length, (req.Flags & CmdFlagNoHole) != 0))
                : _device.WriteZeroesAsync(offset, req.Length, (req.Flags & CmdFlagNoHole) != 0),
            _ => throw new InvalidOperationException($"command {req.Type} passed validation"),
        };
    }

    private async ValueTask ThenFlushAsync(ValueTask operation)
    {
        await operation.ConfigureAwait(false);
        await _device.FlushAsync().ConfigureAwait(false);
    }

    private async Task CompleteLaterAsync(ValueTask operation, Request req, byte[]? buffer, long payload)
    {
        NbdError error = NbdError.None;
        try
        {
            await operation.ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            error = ex switch
            {
                BlockDeviceException bde => bde.Error,
                IOException io when io.HResult is LibC.ENOSPC or LibC.EDQUOT or LibC.EFBIG or unchecked((int)0x80070070) => NbdError.NoSpc,
                _ => NbdError.IO,
            };
            Log.DeviceFailed(_logger, _id, req.Type, req.Offset, req.Length, error, ex);
        }

        Complete(req, buffer, payload, error);
    }

    private void Complete(Request req, byte[]? buffer, long payload, NbdError error)
    {
        if (req.Type == CmdRead && error == NbdError.None)
        {
            Post(new Reply(req.Handle, error, buffer, (int)req.Length, payload));
            return;
        }

        if (buffer is not null)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        Post(new Reply(req.Handle, error, null, 0, payload));
    }

    private void Post(Reply reply)
    {
        if (!_replies.Writer.TryWrite(reply))
        {
            Drop(reply); // connection closing: nobody will send it
        }
    }

    private void Drop(in Reply reply)
    {
        if (reply.Buffer is not null)
        {
            ArrayPool<byte>.Shared.Return(reply.Buffer);
        }

        _limiter.Release(reply.Payload);
    }

    /// <summary>Sends replies as they complete; small ones are gathered into one send while more are queued.</summary>
    private async Task RunWriterAsync()
    {
        await Task.Yield();
        byte[] batch = ArrayPool<byte>.Shared.Rent(WriteBatchSize);
        int used = 0;
        ChannelReader<Reply> replies = _replies.Reader;
        ITimer? watchdog = null;
        if (_options.SendTimeout != Timeout.InfiniteTimeSpan)
        {
            TimeSpan period = TimeSpan.FromTicks(Math.Min(TimeSpan.FromSeconds(1).Ticks, Math.Max(_options.SendTimeout.Ticks / 4, TimeSpan.FromMilliseconds(10).Ticks)));
            watchdog = TimeProvider.System.CreateTimer(static s => ((NbdConnection)s!).CheckSend(), this, period, period);
        }

        try
        {
            while (await replies.WaitToReadAsync().ConfigureAwait(false))
            {
                while (replies.TryRead(out Reply reply))
                {
                    try
                    {
                        if (_sendFailed)
                        {
                            continue;
                        }

                        int total = SimpleReplySize + reply.DataLength;
                        if (reply.DataLength <= CopyIntoBatchLimit)
                        {
                            if (total > batch.Length - used)
                            {
                                await SendAsync(batch.AsMemory(0, used)).ConfigureAwait(false);
                                used = 0;
                            }

                            WriteReplyHeader(batch.AsSpan(used), reply);
                            if (reply.DataLength > 0)
                            {
                                reply.Buffer.AsSpan(SimpleReplySize, reply.DataLength).CopyTo(batch.AsSpan(used + SimpleReplySize));
                            }

                            used += total;
                        }
                        else
                        {
                            if (used > 0)
                            {
                                await SendAsync(batch.AsMemory(0, used)).ConfigureAwait(false);
                                used = 0;
                            }

                            WriteReplyHeader(reply.Buffer, reply);
                            await SendAsync(reply.Buffer.AsMemory(0, total)).ConfigureAwait(false);
                        }
                    }
                    finally
                    {
                        Drop(reply);
                    }
                }

                if (used > 0 && !_sendFailed)
                {
                    await SendAsync(batch.AsMemory(0, used)).ConfigureAwait(false);
                }

                used = 0;
            }
        }
        finally
        {
            watchdog?.Dispose();
            ArrayPool<byte>.Shared.Return(batch);
        }
    }

    private void CheckSend()
    {
        long started = Volatile.Read(ref _sendStarted);
        if (started != 0 && Stopwatch.GetElapsedTime(started) > _options.SendTimeout)
        {
            _sendFailed = true;
            Abort($"the peer did not read replies for {_options.SendTimeout.TotalSeconds:F1} s");
        }
    }

    private async ValueTask SendAsync(ReadOnlyMemory<byte> data)
    {
        if (_sendFailed)
        {
            return;
        }

        try
        {
            Volatile.Write(ref _sendStarted, Stopwatch.GetTimestamp());
            await _stream.WriteAsync(data).ConfigureAwait(false);
            Volatile.Write(ref _sendStarted, 0);
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
        {
            _sendFailed = true;
            Abort("sending a reply failed: " + ex.Message);
        }
    }

    private static void WriteReplyHeader(Span<byte> destination, in Reply reply)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, SimpleReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(destination[4..], (uint)reply.Error);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], reply.Handle);
    }

    // ---------------------------------------------------------------- reading

    /// <returns>False when reading ended cleanly: the peer closed between requests, or shutdown (reason recorded).</returns>
    private async ValueTask<bool> ReadRequestHeaderAsync()
    {
        while (true)
        {
            ReadResult result = await _reader.ReadAsync().ConfigureAwait(false);
            ReadOnlySequence<byte> buffer = result.Buffer;
            if (buffer.Length >= RequestSize)
            {
                buffer.Slice(0, RequestSize).CopyTo(_header);
                _reader.AdvanceTo(buffer.GetPosition(RequestSize));
                return true;
            }

            if (result.IsCanceled)
            {
                _reader.AdvanceTo(buffer.Start);
                SetReason("server shutting down");
                return false;
            }

            if (result.IsCompleted)
            {
                _reader.AdvanceTo(buffer.End);
                if (buffer.Length > 0)
                {
                    throw new EndOfStreamException();
                }

                SetReason("peer closed the connection");
                return false;
            }

            _reader.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    /// <summary>
    /// Reads a write payload. Small ones come through the pipe; for large ones the bytes already buffered are taken
    /// from the pipe and the rest is read straight from the socket into <paramref name="destination"/> (fewer, larger
    /// receives and one copy less). That is safe because the pipe only reads from the stream inside ReadAsync, and
    /// its buffer is empty once we have taken everything it held.
    /// </summary>
    private async ValueTask ReadPayloadAsync(Memory<byte> destination)
    {
        if (destination.Length < DirectReadThreshold)
        {
            await ReadExactAsync(destination, CancellationToken.None).ConfigureAwait(false);
            return;
        }

        if (_reader.TryRead(out ReadResult result))
        {
            ReadOnlySequence<byte> buffered = result.Buffer;
            int n = (int)Math.Min(buffered.Length, destination.Length);
            buffered.Slice(0, n).CopyTo(destination.Span);
            _reader.AdvanceTo(buffered.GetPosition(n));
            destination = destination[n..];
            if (destination.IsEmpty)
            {
                return;
            }

            if (result.IsCanceled)
            {
                throw new OperationCanceledException("Reading was cancelled (server shutting down).");
            }

            if (result.IsCompleted)
            {
                throw new EndOfStreamException();
            }
        }

        while (!destination.IsEmpty)
        {
            int n = await _stream.ReadAsync(destination).ConfigureAwait(false);
            if (n == 0)
            {
                throw new EndOfStreamException();
            }

            destination = destination[n..];
        }
    }

    private async ValueTask ReadExactAsync(Memory<byte> destination, CancellationToken ct)
    {
        if (!await TryReadExactAsync(destination, ct).ConfigureAwait(false))
        {
            throw new EndOfStreamException();
        }
    }

    /// <returns>False when the stream ended before the first byte; throws <see cref="EndOfStreamException"/> when it
    /// ended after some.</returns>
    private async ValueTask<bool> TryReadExactAsync(Memory<byte> destination, CancellationToken ct)
    {
        bool any = false;
        while (!destination.IsEmpty)
        {
            ReadResult result = await _reader.ReadAsync(ct).ConfigureAwait(false);
            ReadOnlySequence<byte> buffer = result.Buffer;
            int n = (int)Math.Min(buffer.Length, destination.Length);
            buffer.Slice(0, n).CopyTo(destination.Span);
            _reader.AdvanceTo(buffer.GetPosition(n));
            destination = destination[n..];
            any |= n > 0;
            if (destination.IsEmpty)
            {
                break;
            }

            if (result.IsCanceled)
            {
                throw new OperationCanceledException("Reading was cancelled (server shutting down).");
            }

            if (result.IsCompleted)
            {
                return any ? throw new EndOfStreamException() : false;
            }
        }

        return true;
    }

    private async ValueTask SkipAsync(long count)
    {
        while (count > 0)
        {
            ReadResult result = await _reader.ReadAsync().ConfigureAwait(false);
            ReadOnlySequence<byte> buffer = result.Buffer;
            long n = Math.Min(buffer.Length, count);
            _reader.AdvanceTo(buffer.GetPosition(n));
            count -= n;
            if (count == 0)
            {
                return;
            }

            if (result.IsCanceled)
            {
                throw new OperationCanceledException("Reading was cancelled (server shutting down).");
            }

            if (result.IsCompleted)
            {
                throw new EndOfStreamException();
            }
        }
    }

    /// <summary>A parsed request header.</summary>
    private readonly record struct Request(uint Magic, ushort Flags, ushort Type, ulong Handle, ulong Offset, uint Length)
    {
        public static Request Parse(ReadOnlySpan<byte> h) => new(
            BinaryPrimitives.ReadUInt32BigEndian(h),
            BinaryPrimitives.ReadUInt16BigEndian(h[4..]),
            BinaryPrimitives.ReadUInt16BigEndian(h[6..]),
            BinaryPrimitives.ReadUInt64BigEndian(h[8..]),
            BinaryPrimitives.ReadUInt64BigEndian(h[16..]),
            BinaryPrimitives.ReadUInt32BigEndian(h[24..]));
    }

    /// <summary>A reply waiting for the writer. <see cref="Buffer"/> holds read data at offset 16 (room for the header)
    /// and goes back to the pool once sent; <see cref="Payload"/> is what the limiter admitted.</summary>
    private readonly record struct Reply(ulong Handle, NbdError Error, byte[]? Buffer, int DataLength, long Payload);
}
