namespace Colo.Nbd.Internal;

/// <summary>Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md). All integers are big-endian.</summary>
internal static class NbdProtocol
{
    /// <summary>"NBDMAGIC", the first 8 bytes the server sends.</summary>
    public const ulong NbdMagic = 0x4e42444d41474943;

    /// <summary>"IHAVEOPT": the newstyle magic, also the prefix of every client option.</summary>
    public const ulong IHaveOpt = 0x49484156454F5054;

    /// <summary>Prefix of every fixed-newstyle option reply.</summary>
    public const ulong OptionReplyMagic = 0x3e889045565a9;

    public const uint RequestMagic = 0x25609513;
    public const uint SimpleReplyMagic = 0x67446698;

    /// <summary>Size of a request header: magic, flags, type, handle, offset, length.</summary>
    public const int RequestSize = 28;

    /// <summary>Size of a simple reply header: magic, error, handle.</summary>
    public const int SimpleReplySize = 16;

    /// <summary>Size of an option header: IHAVEOPT, option, length.</summary>
    public const int OptionHeaderSize = 16;

    // Handshake flags (server) and client flags.
    public const ushort FlagFixedNewstyle = 1 << 0;
    public const ushort FlagNoZeroes = 1 << 1;
    public const uint ClientFlagFixedNewstyle = 1 << 0;
    public const uint ClientFlagNoZeroes = 1 << 1;

    // Transmission flags.
    public const ushort FlagHasFlags = 1 << 0;
    public const ushort FlagReadOnly = 1 << 1;
    public const ushort FlagSendFlush = 1 << 2;
    public const ushort FlagSendFua = 1 << 3;
    public const ushort FlagRotational = 1 << 4;
    public const ushort FlagSendTrim = 1 << 5;
    public const ushort FlagSendWriteZeroes = 1 << 6;
    public const ushort FlagSendDf = 1 << 7;
    public const ushort FlagCanMultiConn = 1 << 8;

    // Options.
    public const uint OptExportName = 1;
    public const uint OptAbort = 2;
    public const uint OptList = 3;
    public const uint OptStartTls = 5;
    public const uint OptInfo = 6;
    public const uint OptGo = 7;
    public const uint OptStructuredReply = 8;

    // Option replies.
    public const uint RepAck = 1;
    public const uint RepServer = 2;
    public const uint RepInfo = 3;
    public const uint RepFlagError = 1u << 31;
    public const uint RepErrUnsup = RepFlagError | 1;
    public const uint RepErrPolicy = RepFlagError | 2;
    public const uint RepErrInvalid = RepFlagError | 3;
    public const uint RepErrUnknown = RepFlagError | 6;
    public const uint RepErrShutdown = RepFlagError | 7;

    // NBD_REP_INFO types.
    public const ushort InfoExport = 0;
    public const ushort InfoName = 1;
    public const ushort InfoDescription = 2;
    public const ushort InfoBlockSize = 3;

    // Commands.
    public const ushort CmdRead = 0;
    public const ushort CmdWrite = 1;
    public const ushort CmdDisc = 2;
    public const ushort CmdFlush = 3;
    public const ushort CmdTrim = 4;
    public const ushort CmdCache = 5;
    public const ushort CmdWriteZeroes = 6;
    public const ushort CmdBlockStatus = 7;

    // Command flags.
    public const ushort CmdFlagFua = 1 << 0;
    public const ushort CmdFlagNoHole = 1 << 1;
    public const ushort CmdFlagDf = 1 << 2;
    public const ushort CmdFlagReqOne = 1 << 3;
    public const ushort CmdFlagFastZero = 1 << 4;

    /// <summary>Longest string (export name, message) the spec allows: 4096 bytes.</summary>
    public const int MaxStringLength = 4096;

    /// <summary>The minimum block size we advertise (any byte alignment works).</summary>
    public const uint MinimumBlockSize = 1;

    /// <summary>The preferred block size we advertise.</summary>
    public const uint PreferredBlockSize = 4096;
}
