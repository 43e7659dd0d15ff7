/*! @microsoft/fetch-event-source 2.0.1 (lib/esm/index.js), copied unmodified below this comment.
 *  Copyright (c) Microsoft Corporation. MIT License: see LICENSE beside this file. */
export { fetchEventSource, EventStreamContentType } from './fetch';
//# sourceMappingURL=index.js.map